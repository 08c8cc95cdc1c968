//! Finds the members of a JSON catalog's top-level object, and the items of the arrays among
//! them, without parsing their values, so the entries can be parsed on two threads at once in
//! shares of equal size.
//!
//! This is a fast path only: it understands just enough JSON to skip a value (strings with
//! escapes, nesting) and to find the commas between an array's items, leaves every check of
//! the values to `serde_json`, and gives up (`None`) on anything unexpected, in which case the
//! caller parses the whole text the ordinary way and reports whatever error that finds. An
//! item's text is whatever lies between two of the array's own commas: an item that is not
//! one JSON value fails when it is parsed, so the items all parse exactly when the array does.

/// One member of the top-level object: its key (without quotes; never escaped), its value's
/// text and, when the value is an array, the text of each of its items.
pub(crate) struct Member<'a> {
    pub(crate) key: &'a str,
    pub(crate) value: &'a str,
    pub(crate) items: Option<Vec<&'a str>>,
}

/// The top-level members of `text` in order, or `None` when `text` is not one object whose
/// keys are plain strings.
pub(crate) fn members(text: &str) -> Option<Vec<Member<'_>>> {
    let bytes = text.as_bytes();
    let mut i = skip_space(bytes, 0);
    if bytes.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_space(bytes, i + 1);
    let mut found = Vec::new();
    if bytes.get(i) == Some(&b'}') {
        return (skip_space(bytes, i + 1) == bytes.len()).then_some(found);
    }
    loop {
        if bytes.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(bytes, i)?;
        let key = &text[i + 1..key_end - 1];
        if key.contains('\\') {
            return None;
        }
        i = skip_space(bytes, key_end);
        if bytes.get(i) != Some(&b':') {
            return None;
        }
        let start = skip_space(bytes, i + 1);
        let (end, items) = if bytes.get(start) == Some(&b'[') {
            let (end, items) = array_items(text, start)?;
            (end, Some(items))
        } else {
            (value_end(bytes, start)?, None)
        };
        found.push(Member { key, value: &text[start..end], items });
        i = skip_space(bytes, end);
        match bytes.get(i) {
            Some(b',') => i = skip_space(bytes, i + 1),
            Some(b'}') => return (skip_space(bytes, i + 1) == bytes.len()).then_some(found),
            _ => return None,
        }
    }
}

fn skip_space(bytes: &[u8], mut i: usize) -> usize {
    while bytes.get(i).is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// The index just past the string that starts (with its quote) at `start`.
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        match bytes.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
}

/// The array that starts (with its bracket) at `start`: the index just past it, and the text
/// of each item, without the spaces around it.
fn array_items(text: &str, start: usize) -> Option<(usize, Vec<&str>)> {
    let bytes = text.as_bytes();
    let mut items = Vec::new();
    let mut i = skip_space(bytes, start + 1);
    if bytes.get(i) == Some(&b']') {
        return Some((i + 1, items));
    }
    loop {
        let item = i;
        let mut depth = 0usize;
        loop {
            match bytes.get(i)? {
                b'"' => {
                    i = string_end(bytes, i)?;
                    continue;
                }
                b'[' | b'{' => depth += 1,
                b']' | b'}' if depth > 0 => depth -= 1,
                b',' | b']' if depth == 0 => break,
                b'}' => return None,
                _ => {}
            }
            i += 1;
        }
        let mut end = i;
        while end > item && matches!(bytes[end - 1], b' ' | b'\t' | b'\n' | b'\r') {
            end -= 1;
        }
        if end == item {
            return None;
        }
        items.push(&text[item..end]);
        if bytes[i] == b']' {
            return Some((i + 1, items));
        }
        i = skip_space(bytes, i + 1);
    }
}

/// The index just past the value that starts at `start`.
fn value_end(bytes: &[u8], start: usize) -> Option<usize> {
    match bytes.get(start)? {
        b'"' => string_end(bytes, start),
        b'[' | b'{' => {
            let mut depth = 0usize;
            let mut i = start;
            loop {
                match bytes.get(i)? {
                    b'"' => {
                        i = string_end(bytes, i)?;
                        continue;
                    }
                    b'[' | b'{' => depth += 1,
                    b']' | b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let len =
                bytes[start..].iter().position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'));
            Some(start + len.unwrap_or(bytes.len() - start)).filter(|end| *end > start)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys_and_values(text: &str) -> Option<Vec<(String, String)>> {
        members(text).map(|m| m.into_iter().map(|m| (m.key.to_owned(), m.value.to_owned())).collect())
    }

    fn items(text: &str) -> Option<Vec<Vec<String>>> {
        let members = members(text)?;
        Some(
            members
                .iter()
                .filter_map(|m| m.items.as_ref())
                .map(|i| i.iter().map(|s| s.to_string()).collect())
                .collect(),
        )
    }

    #[test]
    fn finds_each_item_of_the_arrays() {
        let text = r#"{"a": [ {"x": "],\"}"}, [1, [2]] ,3 ], "b": [], "c": {"d": [1, 2]}, "e": [ "s" ]}"#;
        let expected =
            vec![vec![r#"{"x": "],\"}"}"#.to_owned(), "[1, [2]]".into(), "3".into()], vec![], vec![r#""s""#.into()]];
        assert_eq!(items(text), Some(expected));
        assert_eq!(items(r#"{"a": [1 2]}"#), Some(vec![vec!["1 2".to_owned()]]), "left for serde to reject");
        for text in [r#"{"a": [1,]}"#, r#"{"a": [,1]}"#, r#"{"a": [1}"#, r#"{"a": [1, ]}"#, r#"{"a": [{]}"#] {
            assert!(items(text).is_none(), "{text:?}");
        }
    }

    #[test]
    fn finds_each_member_with_nested_values_and_escapes() {
        let text = r#" { "datacenter": "dc\"1", "nodes": [{"name": "a]}", "meta": {"k": [1, 2]}}],
            "services" : [] , "n": null } "#;
        let found = keys_and_values(text).expect("an object");
        let expected = [
            ("datacenter", r#""dc\"1""#),
            ("nodes", r#"[{"name": "a]}", "meta": {"k": [1, 2]}}]"#),
            ("services", "[]"),
            ("n", "null"),
        ];
        assert_eq!(found, expected.map(|(k, v)| (k.to_owned(), v.to_owned())));
        assert_eq!(keys_and_values("{}"), Some(vec![]));
    }

    #[test]
    fn gives_up_on_anything_but_one_plain_object() {
        for text in [
            "",
            "[]",
            "{",
            r#"{"nodes": [}"#,
            r#"{"nodes": [] "services": []}"#,
            r#"{"no\u0064es": []}"#,
            r#"{"nodes": []} {}"#,
            r#"{"nodes": "open}"#,
            r#"{"nodes": }"#,
        ] {
            assert!(members(text).is_none(), "{text:?}");
        }
    }
}
