//! Typed access to the arguments object a model produced. Models get argument names and types wrong
//! often enough that every mistake must come back as a message naming the argument and what was expected.

use serde_json::{Map, Value};

use crate::error::ToolError;

pub(crate) struct Args<'a> {
    /// `None` when the model sent `null` or nothing, which tools without required arguments accept.
    map: Option<&'a Map<String, Value>>,
}

impl<'a> Args<'a> {
    /// Checks the shape of `value` and rejects argument names the tool does not know: silently ignoring,
    /// say, a `cwd` given to `bash` would run the command somewhere the model did not intend.
    pub(crate) fn parse(tool: &'static str, value: &'a Value, accepted: &[&str]) -> Result<Self, ToolError> {
        let map = match value {
            Value::Object(map) => Some(map),
            Value::Null => None,
            other => return Err(ToolError::NotAnObject(json_type(other))),
        };
        if let Some(unknown) = map.and_then(|m| m.keys().find(|k| !accepted.contains(&k.as_str()))) {
            return Err(ToolError::UnknownArgument {
                name: unknown.clone(),
                tool,
                accepted: accepted.join(", "),
            });
        }
        Ok(Args { map })
    }

    /// The value of `name`, treating an explicit `null` like an absent argument.
    fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.and_then(|m| m.get(name)).filter(|v| !v.is_null())
    }

    pub(crate) fn required_str(&self, name: &'static str) -> Result<&'a str, ToolError> {
        self.optional_str(name)?.ok_or(ToolError::MissingArgument {
            name,
            expected: "a string",
        })
    }

    pub(crate) fn optional_str(&self, name: &'static str) -> Result<Option<&'a str>, ToolError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(wrong_type(name, "a string", other)),
        }
    }

    /// A positive integer such as a line number or a count.
    pub(crate) fn optional_positive_int(&self, name: &'static str) -> Result<Option<u64>, ToolError> {
        const EXPECTED: &str = "a positive integer";
        match self.get(name) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 => Ok(Some(n)),
                _ => Err(wrong_type(name, EXPECTED, v)),
            },
        }
    }

    /// A whole number that may be zero, such as "after line 0" (the start of a file).
    pub(crate) fn optional_count(&self, name: &'static str) -> Result<Option<u64>, ToolError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| wrong_type(name, "a whole number (0 or more)", v)),
        }
    }

    /// A positive number of any kind; used for durations in seconds, where `0.5` is meaningful.
    pub(crate) fn optional_positive_number(&self, name: &'static str) -> Result<Option<f64>, ToolError> {
        const EXPECTED: &str = "a positive number";
        match self.get(name) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(n) if n > 0.0 && n.is_finite() => Ok(Some(n)),
                _ => Err(wrong_type(name, EXPECTED, v)),
            },
        }
    }

    pub(crate) fn optional_bool(&self, name: &'static str) -> Result<Option<bool>, ToolError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(wrong_type(name, "a boolean", other)),
        }
    }
}

fn wrong_type(name: &'static str, expected: &'static str, got: &Value) -> ToolError {
    ToolError::WrongType {
        name,
        expected,
        got: describe(got),
    }
}

/// A short description of what the model sent: the type, plus the value when it is small, so the model
/// can see its mistake without the message echoing a whole file it may have put in the wrong argument.
fn describe(value: &Value) -> String {
    match value {
        Value::Number(n) => format!("the number {n}"),
        Value::Bool(b) => format!("the boolean {b}"),
        other => json_type(other).to_string(),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn null_arguments_act_like_an_empty_object() {
        let value = Value::Null;
        let args = Args::parse("list", &value, &["path"]).expect("null is accepted");
        assert_eq!(args.optional_str("path").expect("absent"), None);
    }

    #[test]
    fn wrong_types_name_the_argument_and_the_expectation() {
        let value = json!({"offset": "ten", "limit": 0, "replace_all": "yes"});
        let args = Args::parse("read", &value, &["offset", "limit", "replace_all"]).expect("object");
        let err = args
            .optional_positive_int("offset")
            .expect_err("string")
            .to_string();
        assert!(
            err.contains("`offset`") && err.contains("positive integer"),
            "{err}"
        );
        let err = args.optional_positive_int("limit").expect_err("zero").to_string();
        assert!(err.contains("the number 0"), "{err}");
        let err = args.optional_bool("replace_all").expect_err("string").to_string();
        assert!(err.contains("boolean"), "{err}");
    }

    #[test]
    fn unknown_arguments_list_the_accepted_ones() {
        let value = json!({"command": "ls", "cwd": "/"});
        let err = Args::parse("bash", &value, &["command", "timeout"])
            .err()
            .expect("cwd is unknown")
            .to_string();
        assert!(err.contains("`cwd`") && err.contains("command, timeout"), "{err}");
    }

    #[test]
    fn non_objects_are_refused() {
        let value = json!(["a"]);
        let err = Args::parse("read", &value, &["path"])
            .err()
            .expect("array")
            .to_string();
        assert!(err.contains("an array"), "{err}");
    }
}
