//! The official API schema (`tests/data/pve/api-9.0-subset.json`, test data
//! kept in the repository), used
//! generically: routes are matched against its path templates, and every
//! request's parameters are checked as PVE's JSONSchema code checks them
//! (unknown parameters, missing ones, types, bounds, enums, patterns,
//! lengths, formats and property strings), producing the same per-field
//! messages under `400 Parameter verification failed.`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use regex::Regex;
use serde_json::Value;

const SCHEMA_JSON: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/data/pve/api-9.0-subset.json"
));

/// One method of one path.
#[derive(Debug)]
pub struct Endpoint {
    /// `GET`, `POST`, ...
    pub method: String,
    /// `/nodes/{node}/qemu/{vmid}/clone`.
    pub template: String,
    /// Parameter definitions.
    pub properties: serde_json::Map<String, Value>,
    /// The PVE 9 permission check.
    pub permissions: Value,
    /// The PVE 8.4 permission check, where it differs.
    pub permissions_v8: Option<Value>,
    /// Parameters PVE 8.4 does not know.
    pub added_in_9: Vec<String>,
    /// Whether API tokens may call it.
    pub allowtoken: bool,
    /// Whether the request is forwarded to `{node}` (595 when it is down).
    pub proxy_to_node: bool,
}

/// The loaded schema.
#[derive(Debug)]
pub struct Schema {
    endpoints: Vec<Endpoint>,
}

/// Why a request matched no endpoint.
#[derive(Debug, PartialEq, Eq)]
pub enum RouteError {
    /// No such path.
    NotFound,
    /// The path exists, the method does not.
    MethodNotAllowed,
}

/// The process-wide schema (parsed once).
pub fn schema() -> &'static Schema {
    static S: OnceLock<Schema> = OnceLock::new();
    S.get_or_init(|| Schema::parse(SCHEMA_JSON).expect("the bundled PVE schema parses"))
}

impl Schema {
    /// Parses the schema document.
    pub fn parse(text: &str) -> Result<Schema, serde_json::Error> {
        let doc: Value = serde_json::from_str(text)?;
        let mut endpoints = Vec::new();
        if let Some(paths) = doc.get("paths").and_then(Value::as_object) {
            for (template, methods) in paths {
                let Some(methods) = methods.as_object() else {
                    continue;
                };
                for (method, def) in methods {
                    if method.starts_with('_') {
                        continue;
                    }
                    let properties = def
                        .pointer("/parameters/properties")
                        .and_then(Value::as_object)
                        .cloned()
                        .unwrap_or_default();
                    let diff = def.get("_diff");
                    endpoints.push(Endpoint {
                        method: method.clone(),
                        template: template.clone(),
                        properties,
                        permissions: def.get("permissions").cloned().unwrap_or(Value::Null),
                        permissions_v8: diff.and_then(|d| d.get("permissions_8.4")).cloned(),
                        added_in_9: diff
                            .and_then(|d| d.get("params_added_vs_8.4"))
                            .and_then(Value::as_array)
                            .map(|a| {
                                a.iter()
                                    .filter_map(|v| v.as_str().map(str::to_string))
                                    .collect()
                            })
                            .unwrap_or_default(),
                        allowtoken: def.get("allowtoken").and_then(Value::as_i64) != Some(0),
                        proxy_to_node: def.get("proxyto").and_then(Value::as_str) == Some("node"),
                    });
                }
            }
        }
        Ok(Schema { endpoints })
    }

    /// Finds the endpoint for a request and the path's parameters.
    pub fn route(
        &self,
        method: &str,
        path: &str,
    ) -> Result<(&Endpoint, BTreeMap<String, String>), RouteError> {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let mut path_exists = false;
        for ep in &self.endpoints {
            let tsegs: Vec<&str> = ep.template.trim_matches('/').split('/').collect();
            if tsegs.len() != segs.len() {
                continue;
            }
            let mut params = BTreeMap::new();
            let matched = tsegs.iter().zip(&segs).all(|(t, s)| {
                if let Some(name) = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                    params.insert(name.to_string(), percent_decode(s));
                    !s.is_empty()
                } else {
                    t == s
                }
            });
            if !matched {
                continue;
            }
            path_exists = true;
            if ep.method == method {
                return Ok((ep, params));
            }
        }
        Err(if path_exists {
            RouteError::MethodNotAllowed
        } else {
            RouteError::NotFound
        })
    }
}

/// Decodes `%XX` escapes.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `a=1&b=x%20y` (query strings and form bodies; `+` is a space).
pub fn parse_form(text: &str) -> BTreeMap<String, String> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                percent_decode(&k.replace('+', " ")),
                percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

/// The definition of a parameter, with `net0` found as `net[n]`.
fn property<'a>(ep: &'a Endpoint, name: &str) -> Option<&'a Value> {
    if let Some(p) = ep.properties.get(name) {
        return Some(p);
    }
    let base = name.trim_end_matches(|c: char| c.is_ascii_digit());
    if base.len() < name.len() {
        return ep.properties.get(&format!("{base}[n]"));
    }
    None
}

fn flag(def: &Value, key: &str) -> bool {
    match def.get(key) {
        Some(Value::Number(n)) => n.as_i64() != Some(0),
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s != "0",
        _ => false,
    }
}

fn number(def: &Value, key: &str) -> Option<f64> {
    match def.get(key)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Checks a request's parameters; `Err` holds PVE's per-field messages.
pub fn validate(
    ep: &Endpoint,
    params: &BTreeMap<String, String>,
    pve8: bool,
) -> Result<(), BTreeMap<String, String>> {
    let mut errors = BTreeMap::new();
    for (name, value) in params {
        let known = property(ep, name).filter(|_| !(pve8 && ep.added_in_9.contains(name)));
        let Some(def) = known else {
            errors.insert(
                name.clone(),
                "property is not defined in schema and the schema does not allow additional \
                 properties"
                    .to_string(),
            );
            continue;
        };
        if let Err(msg) = check_value(def, value) {
            errors.insert(name.clone(), msg);
        }
    }
    for (name, def) in &ep.properties {
        if name.contains("[n]") || flag(def, "optional") {
            continue;
        }
        if !params.contains_key(name) {
            errors.insert(
                name.clone(),
                "property is missing and it is not optional".to_string(),
            );
        }
    }
    for (name, def) in &ep.properties {
        if let Some(req) = def.get("requires").and_then(Value::as_str)
            && params.contains_key(name)
            && !params.contains_key(req)
        {
            errors.insert(
                req.to_string(),
                format!("parameter is required by '{name}'"),
            );
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Checks one value against its definition.
pub fn check_value(def: &Value, value: &str) -> Result<(), String> {
    let kind = def.get("type").and_then(Value::as_str).unwrap_or("string");
    match kind {
        "integer" => {
            let ok = value
                .strip_prefix(['+', '-'])
                .unwrap_or(value)
                .bytes()
                .all(|b| b.is_ascii_digit())
                && !value.trim_start_matches(['+', '-']).is_empty();
            if !ok {
                return Err(format!("type check ('integer') failed - got '{value}'"));
            }
            bounds(def, value.parse::<f64>().unwrap_or(0.0))?;
        }
        "number" => {
            let n: f64 = value
                .parse()
                .map_err(|_| format!("type check ('number') failed - got '{value}'"))?;
            bounds(def, n)?;
        }
        "boolean" => {
            if parse_bool(value).is_none() {
                return Err(format!("type check ('boolean') failed - got '{value}'"));
            }
        }
        _ => {
            if let Some(max) = number(def, "maxLength")
                && value.chars().count() as f64 > max
            {
                return Err(format!("value may only be {max} characters long"));
            }
            if let Some(list) = def.get("enum").and_then(Value::as_array) {
                let names: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
                if !names.contains(&value) {
                    return Err(format!(
                        "value '{value}' does not have a value in the enumeration '{}'",
                        names.join(", ")
                    ));
                }
            }
            if let Some(p) = def.get("pattern").and_then(Value::as_str)
                && !pattern_matches(p, value)
            {
                return Err("value does not match the regex pattern".to_string());
            }
            match def.get("format") {
                Some(Value::String(f)) => super::formats::check(f, value)?,
                Some(Value::Object(fmt)) => check_property_string(def, fmt, value)?,
                _ => {}
            }
        }
    }
    Ok(())
}

fn bounds(def: &Value, n: f64) -> Result<(), String> {
    if let Some(min) = number(def, "minimum")
        && n < min
    {
        return Err(format!("value must have a minimum value of {min}"));
    }
    if let Some(max) = number(def, "maximum")
        && n > max
    {
        return Err(format!("value must have a maximum value of {max}"));
    }
    Ok(())
}

/// PVE's boolean spellings.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Perl patterns from the schema (`(?^:...)`, `\@`) as anchored Rust regexes.
fn pattern_matches(perl: &str, value: &str) -> bool {
    static CACHE: OnceLock<std::sync::Mutex<BTreeMap<String, Option<Regex>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    let re = cache.entry(perl.to_string()).or_insert_with(|| {
        let rust = perl
            .replace("(?^:", "(?:")
            .replace("\\@", "@")
            .replace("{,", "{0,");
        Regex::new(&format!("^(?:{rust})$")).ok()
    });
    // A pattern we cannot translate is not held against the client.
    re.as_ref().is_none_or(|r| r.is_match(value))
}

/// `[key=]value,key=value,...` against a format dictionary.
fn check_property_string(
    def: &Value,
    fmt: &serde_json::Map<String, Value>,
    value: &str,
) -> Result<(), String> {
    let default_key = fmt
        .iter()
        .find(|(_, d)| flag(d, "default_key"))
        .map(|(k, _)| k.clone());
    let _ = def;
    for part in value.split(',').filter(|p| !p.is_empty()) {
        let (key, val) = match part.split_once('=') {
            Some((k, v)) => (k.to_string(), v),
            None => match &default_key {
                Some(k) => (k.clone(), part),
                None => {
                    return Err(format!(
                        "format error - value without key, but schema does not define a \
                         default key: '{part}'"
                    ));
                }
            },
        };
        let Some(sub) = fmt.get(&key) else {
            return Err(format!(
                "format error - {key}: property is not defined in schema"
            ));
        };
        if sub.get("alias").is_some() || sub.get("keyAlias").is_some() {
            continue;
        }
        check_value(sub, val).map_err(|e| format!("format error - {key}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_methods() {
        let s = schema();
        let (ep, p) = s.route("POST", "/nodes/pve1/qemu/9000/clone").unwrap();
        assert_eq!(ep.template, "/nodes/{node}/qemu/{vmid}/clone");
        assert_eq!(p["node"], "pve1");
        assert_eq!(p["vmid"], "9000");
        assert_eq!(
            s.route("PATCH", "/nodes/pve1/qemu/9000/clone").unwrap_err(),
            RouteError::MethodNotAllowed
        );
        assert_eq!(s.route("GET", "/nope").unwrap_err(), RouteError::NotFound);
    }

    #[test]
    fn clone_parameters_are_checked() {
        let (ep, _) = schema().route("POST", "/nodes/a/qemu/100/clone").unwrap();
        let mut p = BTreeMap::new();
        p.insert("node".to_string(), "a".to_string());
        p.insert("vmid".to_string(), "100".to_string());
        p.insert("newid".to_string(), "99".to_string());
        p.insert("full".to_string(), "maybe".to_string());
        p.insert("bogus".to_string(), "1".to_string());
        p.insert("format".to_string(), "vdi".to_string());
        let e = validate(ep, &p, false).unwrap_err();
        assert_eq!(e["newid"], "value must have a minimum value of 100");
        assert!(e["full"].contains("boolean"));
        assert!(e["bogus"].contains("not defined in schema"));
        assert!(e["format"].contains("enumeration"));
        p.clear();
        p.insert("node".into(), "a".into());
        p.insert("vmid".into(), "100".into());
        let e = validate(ep, &p, false).unwrap_err();
        assert_eq!(e["newid"], "property is missing and it is not optional");
    }

    #[test]
    fn property_strings_and_versions() {
        let (ep, _) = schema().route("PUT", "/nodes/a/qemu/100/config").unwrap();
        let mut p = BTreeMap::new();
        p.insert("node".to_string(), "a".to_string());
        p.insert("vmid".to_string(), "100".to_string());
        p.insert("memory".to_string(), "2048".to_string());
        p.insert(
            "net0".to_string(),
            "virtio=AA:BB:CC:DD:EE:FF,bridge=vmbr0".to_string(),
        );
        assert!(validate(ep, &p, false).is_ok());
        p.insert("memory".to_string(), "current=8".to_string());
        assert!(validate(ep, &p, false).unwrap_err()["memory"].contains("minimum"));
        let (ep, _) = schema()
            .route("POST", "/nodes/a/qemu/100/status/start")
            .unwrap();
        let mut p = BTreeMap::new();
        p.insert("node".to_string(), "a".to_string());
        p.insert("vmid".to_string(), "100".to_string());
        p.insert("with-conntrack-state".to_string(), "1".to_string());
        assert!(validate(ep, &p, false).is_ok());
        assert!(validate(ep, &p, true).is_err());
    }
}
