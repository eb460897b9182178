//! `application/x-www-form-urlencoded` bodies, as Wootric can send them, turned into the same
//! JSON tree the tool's JSON body would give: `response[end_user_properties][plan]=Pro` becomes
//! `{"response":{"end_user_properties":{"plan":"Pro"}}}`. Every value stays a string; the mappers
//! accept numbers sent as strings anyway.

use serde_json::{Map, Value};

/// Decodes `%XX` escapes and `+` as space; invalid escapes are kept as written.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push(high * 16 + low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|d| d as u8)
}

/// Parses a form body into a JSON object; keys with `[a][b]` nest. Later duplicates win.
pub fn parse_form(body: &str) -> Value {
    let mut root = Map::new();
    for pair in body.split('&').map(str::trim).filter(|p| !p.is_empty()) {
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(raw_key);
        let value = Value::String(percent_decode(raw_value));
        let mut path: Vec<&str> = Vec::new();
        let (head, mut rest) = key.split_once('[').map_or((key.as_str(), ""), |(h, r)| (h, r));
        path.push(head);
        while let Some((segment, after)) = rest.split_once(']') {
            path.push(segment);
            rest = after.strip_prefix('[').unwrap_or("");
        }
        insert(&mut root, &path, value);
    }
    Value::Object(root)
}

fn insert(map: &mut Map<String, Value>, path: &[&str], value: Value) {
    let Some((first, rest)) = path.split_first() else { return };
    if rest.is_empty() {
        map.insert(first.to_string(), value);
        return;
    }
    let entry = map.entry(first.to_string()).or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    if let Value::Object(child) = entry {
        insert(child, rest, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_keys_become_objects() {
        let form = parse_form(
            "response[id]=1128&response[score]=7&response[end_user_properties][pricing_plan]=\
             Web%20App&event_name=created&timestamp=2016-08-04%2013%3A57%3A31%20-0700",
        );
        assert_eq!(form["response"]["id"], "1128");
        assert_eq!(form["response"]["end_user_properties"]["pricing_plan"], "Web App");
        assert_eq!(form["timestamp"], "2016-08-04 13:57:31 -0700");
    }

    #[test]
    fn odd_input_never_panics() {
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz+%41"), "%zz A");
        assert_eq!(percent_decode("%"), "%");
        let form = parse_form("a=1&a[b]=2&[]=&==&%ff=x");
        assert_eq!(form["a"]["b"], "2");
    }
}
