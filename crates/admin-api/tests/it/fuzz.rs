//! Property-style: walk the served OpenAPI document and send every operation generated bad
//! input (wrong-typed fields, missing fields, junk JSON, deep nesting, bad query values,
//! odd ids). Every answer must be a 4xx problem document, never a 5xx.
use crate::both_dbs;
use crate::common::{Server, TOKEN, serve};
use serde_json::{Map, Value, json};

/// xorshift64*: deterministic, so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn junk(rng: &mut Rng, depth: u32) -> Value {
    match rng.below(if depth > 3 { 7 } else { 9 }) {
        0 => Value::Null,
        1 => json!(rng.below(2) == 0),
        2 => json!(-(rng.next() as i64).abs()),
        3 => json!(1e308 * 10.0_f64.min(1.0)),
        4 => json!(
            [
                "",
                "'; DROP TABLE x; --",
                "\u{202e}rtl",
                "📞",
                "a\u{0}b",
                "***"
            ][rng.below(6)]
        ),
        5 => json!("x".repeat(rng.below(3000))),
        6 => json!(rng.next()),
        7 => Value::Array((0..rng.below(4)).map(|_| junk(rng, depth + 1)).collect()),
        _ => {
            let mut m = Map::new();
            for k in ["kind", "id", "name", "token", "x"] {
                if rng.below(2) == 0 {
                    m.insert(k.to_owned(), junk(rng, depth + 1));
                }
            }
            Value::Object(m)
        }
    }
}

/// A value of the wrong JSON type for `schema` (or junk when the type is unknown).
fn wrong_for(schema: &Value, rng: &mut Rng) -> Value {
    let ty = schema["type"]
        .as_str()
        .or_else(|| schema["type"][0].as_str());
    match ty {
        Some("string") => [json!(5), json!([]), json!({}), json!(true)][rng.below(4)].clone(),
        Some("integer") | Some("number") => {
            [json!("5"), json!(-1), json!(1.5), json!(1e40), json!([])][rng.below(5)].clone()
        }
        Some("boolean") => [json!("true"), json!(1), json!(null)][rng.below(3)].clone(),
        Some("array") => [json!("a"), json!({}), json!([null, 5])][rng.below(3)].clone(),
        _ => junk(rng, 0),
    }
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap_or_default();
            &doc["components"]["schemas"][name]
        }
        None => schema,
    }
}

/// A plausible-shaped object for a schema: every property present with a value of its
/// declared type (deliberately not a valid resource).
fn shaped(doc: &Value, schema: &Value) -> Map<String, Value> {
    let schema = resolve(doc, schema);
    let mut m = Map::new();
    if let Some(props) = schema["properties"].as_object() {
        for (k, p) in props {
            let p = resolve(doc, p);
            let ty = p["type"].as_str().or_else(|| p["type"][0].as_str());
            let v = match ty {
                Some("string") => json!(p["enum"][0].as_str().unwrap_or("x")),
                Some("integer") | Some("number") => json!(1),
                Some("boolean") => json!(true),
                Some("array") => json!([]),
                _ => json!({}),
            };
            m.insert(k.clone(), v);
        }
    }
    m
}

#[track_caller]
fn check(r: &crate::common::Reply, what: &str) {
    assert!(
        (400..500).contains(&r.status),
        "{what}: expected a 4xx, got {} {}",
        r.status,
        r.text
    );
    assert_eq!(
        r.content_type(),
        "application/problem+json",
        "{what}: {}",
        r.text
    );
    assert_eq!(r.json["status"], r.status, "{what}: {}", r.text);
}

async fn send(srv: &Server, method: &str, path: &str, body: &[u8]) -> crate::common::Reply {
    let auth = format!("Bearer {TOKEN}");
    srv.raw(
        method,
        path,
        &[("authorization", auth.as_str())],
        Some(("application/json", body.to_vec())),
    )
    .await
}

both_dbs!(every_operation_refuses_generated_bad_input_with_4xx, |db| {
    let srv = serve(db.store.clone()).await;
    let doc = srv.get("/api/v1/openapi.json").await.json;
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut sent = 0;
    let paths = doc["paths"].as_object().unwrap().clone();
    for (template, item) in &paths {
        for (method, op) in item.as_object().unwrap() {
            let method = method.to_uppercase();
            for odd_id in ["nope", "%27%3B--", "%F0%9F%93%9E", "%00"] {
                let path = template.replace("{id}", odd_id);
                let has_id = template.contains("{id}");
                // Bad query values for each declared query parameter.
                for p in op["parameters"].as_array().into_iter().flatten() {
                    if p["in"] != "query" {
                        continue;
                    }
                    let name = p["name"].as_str().unwrap();
                    for bad in ["%00", "-1", "abc", "99999999999999999999999", "1.5"] {
                        let r = srv
                            .call(&method, &format!("{path}?{name}={bad}"), None)
                            .await;
                        sent += 1;
                        let integer = p["schema"]["type"] == "integer";
                        if r.status < 400 && !(integer && ["abc", "1.5", "%00"].contains(&bad)) {
                            // A value valid for the parameter's type (a string filter, a
                            // negative epoch time) just filters.
                            assert_eq!(r.status, 200, "{method} {path}?{name}={bad}");
                            continue;
                        }
                        check(&r, &format!("{method} {path}?{name}={bad}"));
                    }
                }
                if has_id && method != "POST" && method != "PUT" {
                    let r = srv.call(&method, &path, None).await;
                    sent += 1;
                    if !template.ends_with("/openapi.json") {
                        check(&r, &format!("{method} {path}"));
                    }
                }
                let Some(schema) =
                    op["requestBody"]["content"]["application/json"]["schema"].as_object()
                else {
                    continue;
                };
                let schema = Value::Object(schema.clone());
                let base = shaped(&doc, &schema);
                let required: Vec<String> = resolve(&doc, &schema)["required"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect();
                let mut bodies: Vec<Vec<u8>> = vec![
                    b"".to_vec(),
                    b"{".to_vec(),
                    b"[]".to_vec(),
                    b"null".to_vec(),
                    b"\"peer\"".to_vec(),
                    "[".repeat(30_000).into_bytes(),
                    format!("{{\"name\":\"{}\"}}", "a".repeat(70_000)).into_bytes(),
                    vec![0xc3, 0x28, b'{', b'}'],
                ];
                // Each property with a wrong type, each required property missing.
                let props = resolve(&doc, &schema)["properties"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                for (k, p) in &props {
                    let mut m = base.clone();
                    m.insert(k.clone(), wrong_for(resolve(&doc, p), &mut rng));
                    bodies.push(Value::Object(m).to_string().into_bytes());
                }
                for k in &required {
                    let mut m = base.clone();
                    m.remove(k);
                    bodies.push(Value::Object(m).to_string().into_bytes());
                }
                for _ in 0..20 {
                    let mut m = base.clone();
                    let keys: Vec<String> = m.keys().cloned().collect();
                    if !keys.is_empty() {
                        let k = keys[rng.below(keys.len())].clone();
                        m.insert(k, junk(&mut rng, 0));
                    }
                    bodies.push(Value::Object(m).to_string().into_bytes());
                    bodies.push(junk(&mut rng, 0).to_string().into_bytes());
                }
                for body in bodies {
                    let r = send(&srv, &method, &path, &body).await;
                    sent += 1;
                    let what = format!(
                        "{method} {path} {}",
                        String::from_utf8_lossy(&body[..body.len().min(300)])
                    );
                    if r.status == 201 {
                        // A generated body that happens to be valid (e.g. an admin token with
                        // a junk name) is fine; it must still be a JSON document.
                        assert!(r.json.is_object(), "{what}");
                        continue;
                    }
                    check(&r, &what);
                }
            }
        }
    }
    assert!(sent > 1000, "only {sent} requests sent");
});
