//! Adding and removing our entries in a JSONC config file through a concrete syntax tree, so that
//! everything else in the file — comments, order, indentation, line endings, trailing commas — stays
//! exactly as the user wrote it.

use jsonc_parser::cst::{CstInputValue, CstObject, CstObjectProp, CstRootNode};
use jsonc_parser::ParseOptions;
use serde_json::Value;
use thiserror::Error;

/// One entry we own: `section.key` (e.g. `mcp.orchestrator`) with the value we write there.
#[derive(Debug, Clone)]
pub struct Entry {
    pub section: &'static str,
    pub key: &'static str,
    pub value: CstInputValue,
    /// Whether a value found at `section.key` is one we wrote (perhaps an older version of it).
    pub ours: fn(&Value) -> bool,
}

/// Why a file is left alone.
#[derive(Debug, Error)]
pub enum EditError {
    #[error("it is not valid JSON or JSONC: {0}")]
    Parse(String),
    #[error("{0} is not a JSON object")]
    NotAnObject(String),
    #[error("`{0}` is already there and was not written by orchestrator; remove or rename it first")]
    NotOurs(String),
}

/// What a file may contain: JSON with comments and trailing commas, as OpenCode reads it. Anything
/// looser is refused rather than guessed at.
fn parse_options() -> ParseOptions {
    ParseOptions {
        allow_comments: true,
        allow_trailing_commas: true,
        allow_loose_object_property_names: false,
        allow_missing_commas: false,
        allow_single_quoted_strings: false,
        allow_hexadecimal_numbers: false,
        allow_unary_plus_numbers: false,
        allow_bare_decimal_point_numbers: false,
        allow_non_finite_numbers: false,
        allow_extended_string_escapes: false,
    }
}

fn parse(text: &str) -> Result<CstRootNode, EditError> {
    let root = CstRootNode::parse(text, &parse_options()).map_err(|e| EditError::Parse(e.to_string()))?;
    match root.value() {
        Some(value) if value.as_object().is_none() => {
            Err(EditError::NotAnObject("the file's top level".into()))
        }
        _ => Ok(root),
    }
}

/// What is at `entry.section.entry.key` now.
enum Presence {
    Absent,
    Ours(CstObjectProp, Value),
    Foreign,
}

fn section(root: &CstRootNode, entry: &Entry) -> Result<Option<CstObject>, EditError> {
    let Some(top) = root.object_value() else {
        return Ok(None);
    };
    let Some(prop) = top.get(entry.section) else {
        return Ok(None);
    };
    prop.object_value()
        .map(Some)
        .ok_or_else(|| EditError::NotAnObject(format!("`{}`", entry.section)))
}

fn presence(root: &CstRootNode, entry: &Entry) -> Result<Presence, EditError> {
    let Some(section) = section(root, entry)? else {
        return Ok(Presence::Absent);
    };
    let Some(prop) = section.get(entry.key) else {
        return Ok(Presence::Absent);
    };
    let value = prop
        .value()
        .and_then(|v| v.to_serde_value())
        .unwrap_or(Value::Null);
    if (entry.ours)(&value) {
        Ok(Presence::Ours(prop, value))
    } else {
        Ok(Presence::Foreign)
    }
}

/// The file with our entries added, or `None` when they are already there as we would write them.
/// `before` is `None` when the file does not exist yet. Refuses, changing nothing, when the file
/// cannot be parsed or holds an entry of the same name that is not ours.
pub fn install(before: Option<&str>, entries: &[Entry]) -> Result<Option<String>, EditError> {
    let root = parse(before.unwrap_or(""))?;
    let found = entries
        .iter()
        .map(|entry| presence(&root, entry))
        .collect::<Result<Vec<_>, _>>()?;
    let top = root.object_value_or_set();
    if before.is_none() {
        // A new file gets the schema line OpenCode itself writes, for editor completion.
        top.append("$schema", "https://opencode.ai/config.json".into());
    }
    let mut changed = before.is_none();
    for (entry, found) in entries.iter().zip(found) {
        changed |= put(&top, entry, found)?;
    }
    Ok(changed.then(|| root.to_string()))
}

/// Writes one entry; false when it was already there as we would write it.
fn put(top: &CstObject, entry: &Entry, found: Presence) -> Result<bool, EditError> {
    match found {
        Presence::Ours(prop, value) => {
            if value == to_json(&entry.value) {
                return Ok(false);
            }
            // An older version of ours (another binary path, say): replace it where it stands.
            prop.set_value(entry.value.clone());
        }
        Presence::Absent => {
            let section = top
                .object_value_or_create(entry.section)
                .ok_or_else(|| EditError::NotAnObject(format!("`{}`", entry.section)))?;
            section.append(entry.key, entry.value.clone());
        }
        Presence::Foreign => return Err(EditError::NotOurs(format!("{}.{}", entry.section, entry.key))),
    }
    Ok(true)
}

/// Whether any of our entries is in the file.
pub fn installed(text: &str, entries: &[Entry]) -> Result<bool, EditError> {
    let root = parse(text)?;
    for entry in entries {
        if matches!(presence(&root, entry)?, Presence::Ours(..)) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The file without our entries, and without a section that only held them. Entries of the same
/// name that are not ours stay.
pub fn strip(text: &str, entries: &[Entry]) -> Result<String, EditError> {
    let root = parse(text)?;
    for entry in entries {
        if let Presence::Ours(prop, _) = presence(&root, entry)? {
            prop.remove();
            remove_if_empty(&root, entry.section);
        }
    }
    Ok(root.to_string())
}

fn remove_if_empty(root: &CstRootNode, name: &str) {
    let Some(prop) = root.object_value().and_then(|top| top.get(name)) else {
        return;
    };
    let Some(section) = prop.object_value() else {
        return;
    };
    // A comment inside is the user's; the section stays with it.
    let has_comments = section.children().iter().any(|c| c.is_comment());
    if section.properties().is_empty() && !has_comments {
        prop.remove();
    }
}

/// What `uninstall` leaves: the new text, or `None` when the file should not exist at all.
#[derive(Debug, PartialEq)]
pub enum Restored {
    /// None of our entries is in the file.
    NotInstalled,
    /// The file as it was before `install`, byte for byte (from the backup).
    Backup(String),
    /// `install` created the file and nothing else was added since: remove it.
    Delete,
    /// The user changed the file since `install`: our entries are cut out of it as it is now.
    Stripped(String),
}

/// The file without our entries. When the only difference from what `install` made of `backup` (or
/// of no file, when there is no backup) is our entries, the original comes back byte for byte;
/// otherwise the entries are cut out of the current text.
pub fn uninstall(current: &str, backup: Option<&str>, entries: &[Entry]) -> Result<Restored, EditError> {
    if !installed(current, entries)? {
        return Ok(Restored::NotInstalled);
    }
    let stripped = strip(current, entries)?;
    match backup {
        Some(original) if same_after_install(Some(original), &stripped, entries) => {
            Ok(Restored::Backup(original.to_string()))
        }
        None if same_after_install(None, &stripped, entries) => Ok(Restored::Delete),
        _ => Ok(Restored::Stripped(stripped)),
    }
}

/// Whether installing into `original` and stripping again gives `stripped`: then the current file is
/// `original` plus our entries, and nothing else changed.
fn same_after_install(original: Option<&str>, stripped: &str, entries: &[Entry]) -> bool {
    // A backup that already holds our entries is not the file from before the first install.
    if original.is_some_and(|text| installed(text, entries).unwrap_or(true)) {
        return false;
    }
    let reinstalled = match install(original, entries) {
        Ok(Some(text)) => text,
        _ => return false,
    };
    strip(&reinstalled, entries).is_ok_and(|text| text == stripped)
}

/// The JSON value an input value stands for, to compare with what a file holds.
pub fn to_json(value: &CstInputValue) -> Value {
    match value {
        CstInputValue::Null => Value::Null,
        CstInputValue::Bool(b) => Value::Bool(*b),
        CstInputValue::Number(n) => serde_json::from_str(n).unwrap_or(Value::Null),
        CstInputValue::String(s) => Value::String(s.clone()),
        CstInputValue::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        CstInputValue::Object(props) => {
            Value::Object(props.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<Entry> {
        vec![
            Entry {
                section: "mcp",
                key: "orchestrator",
                value: CstInputValue::Object(vec![
                    ("type".into(), "local".into()),
                    (
                        "command".into(),
                        CstInputValue::Array(vec!["/bin/orchestrator".into(), "mcp".into()]),
                    ),
                ]),
                ours: |v| v["type"] == "local" && v["command"][1] == "mcp",
            },
            Entry {
                section: "command",
                key: "task",
                value: CstInputValue::Object(vec![(
                    "template".into(),
                    "orchestrator_start_mission $ARGUMENTS".into(),
                )]),
                ours: |v| {
                    v["template"]
                        .as_str()
                        .is_some_and(|t| t.contains("orchestrator_start_mission"))
                },
            },
        ]
    }

    fn round_trip(before: &str) {
        let after = install(Some(before), &entries())
            .expect("installs")
            .expect("changes");
        assert!(installed(&after, &entries()).expect("parses"));
        // Even without the backup, cutting our entries out gives the original back.
        assert_eq!(strip(&after, &entries()).expect("strips"), before);
        assert_eq!(
            uninstall(&after, Some(before), &entries()).expect("uninstalls"),
            Restored::Backup(before.to_string())
        );
    }

    #[test]
    fn comments_trailing_commas_and_crlf_survive_a_round_trip() {
        round_trip("// mine\n{\n  \"mcp\": {\n    \"x\": { \"type\": \"remote\" }, // keep\n  },\n}\n");
        round_trip("{\r\n\t\"model\": \"a/b\"\r\n}\r\n");
        round_trip("{}");
    }

    #[test]
    fn a_created_file_is_deleted_again() {
        let after = install(None, &entries()).expect("installs").expect("changes");
        assert!(after.contains("$schema"));
        assert_eq!(
            uninstall(&after, None, &entries()).expect("uninstalls"),
            Restored::Delete
        );
    }

    #[test]
    fn an_empty_section_from_before_comes_back_from_the_backup() {
        let before = "{ \"mcp\": {} }";
        let after = install(Some(before), &entries())
            .expect("installs")
            .expect("changes");
        assert_eq!(
            uninstall(&after, Some(before), &entries()).expect("uninstalls"),
            Restored::Backup(before.into())
        );
    }

    #[test]
    fn later_edits_are_kept() {
        let before = "{\n  \"model\": \"a/b\"\n}\n";
        let after = install(Some(before), &entries())
            .expect("installs")
            .expect("changes");
        let edited = after.replace("\"a/b\"", "\"c/d\"");
        match uninstall(&edited, Some(before), &entries()).expect("uninstalls") {
            Restored::Stripped(text) => assert_eq!(text, "{\n  \"model\": \"c/d\"\n}\n"),
            other => panic!("expected the edit to be kept, got {other:?}"),
        }
    }

    #[test]
    fn installing_twice_changes_nothing() {
        let after = install(Some("{}"), &entries())
            .expect("installs")
            .expect("changes");
        assert_eq!(install(Some(&after), &entries()).expect("installs"), None);
    }

    #[test]
    fn refuses_what_it_cannot_parse_or_does_not_own() {
        assert!(matches!(
            install(Some("{ \"a\": "), &entries()),
            Err(EditError::Parse(_))
        ));
        assert!(matches!(
            install(Some("[1]"), &entries()),
            Err(EditError::NotAnObject(_))
        ));
        assert!(matches!(
            install(Some("{ 'a': 1 }"), &entries()),
            Err(EditError::Parse(_))
        ));
        assert!(matches!(
            install(
                Some("{ \"mcp\": { \"orchestrator\": { \"type\": \"remote\" } } }"),
                &entries()
            ),
            Err(EditError::NotOurs(_))
        ));
        assert!(matches!(
            install(Some("{ \"mcp\": 3 }"), &entries()),
            Err(EditError::NotAnObject(_))
        ));
    }

    #[test]
    fn an_older_entry_of_ours_is_updated_in_place() {
        let old = "{\n  \"mcp\": {\n    \"orchestrator\": { \"type\": \"local\", \"command\": [\"/old/orchestrator\", \"mcp\"] }\n  }\n}\n";
        let after = install(Some(old), &entries())
            .expect("installs")
            .expect("changes");
        assert!(after.contains("/bin/orchestrator") && !after.contains("/old/"));
    }
}
