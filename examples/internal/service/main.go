package service

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
)

// Main is the whole program of an example service: `-healthcheck` asks the running
// instance's /health and exits; otherwise it serves until SIGTERM or SIGINT.
func Main(name, listen string) {
	healthcheck := flag.Bool("healthcheck", false, "ask the running instance's /health once and exit 0 when it answers")
	flag.Parse()
	logger := log.New(os.Stderr, name+": ", log.LstdFlags)
	cfg, err := FromEnv(name, listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(2)
	}
	if *healthcheck {
		if err := Healthcheck(cfg.Listen); err != nil {
			fmt.Fprintln(os.Stderr, name+":", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := Run(ctx, cfg, logger); err != nil {
		logger.Print(err)
		os.Exit(1)
	}
}
