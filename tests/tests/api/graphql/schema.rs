//! `schema.graphql` is what `calltrail schema` prints, and every type,
//! field and argument has a description.

use std::path::Path;

use serde_json::Value;

const REGENERATE: &str = "cargo run -q -- schema > schema.graphql";

fn checked_in() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema.graphql");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; regenerate it with `{REGENERATE}`", path.display()))
}

#[test]
fn the_checked_in_schema_is_the_one_the_server_runs() {
    assert!(
        calltrail::graphql::sdl() == checked_in(),
        "schema.graphql is out of date; regenerate it with `{REGENERATE}` and review the diff"
    );
}

#[test]
fn calltrail_schema_prints_the_checked_in_schema() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_calltrail-under-test"))
        .arg("schema")
        .env_clear()
        .output()
        .expect("runs");
    assert!(output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stdout) == checked_in(),
        "`calltrail schema` differs from schema.graphql; regenerate it with `{REGENERATE}`"
    );
}

#[tokio::test]
async fn every_type_field_argument_and_enum_value_has_a_description() {
    let schema = calltrail::graphql::schema_builder().finish();
    let query = "{ __schema { types { name description
        fields { name description args { name description } }
        inputFields { name description }
        enumValues { name description } } } }";
    let answer = serde_json::to_value(schema.execute(query).await).unwrap();
    let mut undescribed = Vec::new();
    let described = |v: &Value| {
        v["description"]
            .as_str()
            .is_some_and(|d| !d.trim().is_empty())
    };
    for ty in answer["data"]["__schema"]["types"].as_array().unwrap() {
        let name = ty["name"].as_str().unwrap();
        if name.starts_with("__") || ["String", "Int", "Float", "Boolean", "ID"].contains(&name) {
            continue;
        }
        if !described(ty) {
            undescribed.push(name.to_owned());
        }
        for list in ["fields", "inputFields", "enumValues"] {
            for member in ty[list].as_array().into_iter().flatten() {
                let member_name = format!("{name}.{}", member["name"].as_str().unwrap());
                if !described(member) {
                    undescribed.push(member_name.clone());
                }
                for arg in member["args"].as_array().into_iter().flatten() {
                    if !described(arg) {
                        undescribed
                            .push(format!("{member_name}({})", arg["name"].as_str().unwrap()));
                    }
                }
            }
        }
    }
    assert!(undescribed.is_empty(), "no description: {undescribed:#?}");
}
