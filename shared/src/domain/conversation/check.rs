//! The rules a whole conversation keeps, checked at intake so that nothing a provider would refuse
//! (or silently misread) is written: each speaker says only what it can, every tool result answers
//! an earlier call, call ids are not reused, tools are named uniquely with schemas that compile,
//! and a tool choice names a tool offered. Each refusal names the field.

use std::collections::HashSet;

use super::output::compile_schema;
use super::{Conversation, OutputFormat, Part, Role, ToolChoice, tool_name};
use crate::domain::{MAX_MESSAGES, MAX_TEXT_CHARS, ValidationError};

/// Most tools offered in one request (OpenAI's limit).
pub const MAX_TOOLS: usize = 128;
/// Most images in one request.
pub const MAX_IMAGES: usize = 16;

impl Conversation {
    /// Checks the conversation's rules, naming the first field that breaks one.
    pub fn check(&self) -> Result<(), ValidationError> {
        if self.messages.is_empty() || self.messages.len() > MAX_MESSAGES {
            return Err(ValidationError::new(
                "messages",
                format!("must hold 1 to {MAX_MESSAGES} messages"),
            ));
        }
        let mut calls = Calls::default();
        for (i, message) in self.messages.iter().enumerate() {
            check_message(message, &format!("messages[{i}]"), &mut calls)?;
        }
        if self.images().count() > MAX_IMAGES {
            return Err(ValidationError::new(
                "messages",
                format!("hold at most {MAX_IMAGES} images"),
            ));
        }
        check_tools(self)?;
        if let OutputFormat::JsonSchema(format) = &self.output {
            tool_name(&format.name).map_err(|e| ValidationError::new("output.name", e))?;
            compile_schema(&format.schema).map_err(|e| ValidationError::new("output.schema", e))?;
        }
        Ok(())
    }
}

/// The tool calls made so far in the conversation: their ids, and the tools they named.
#[derive(Default)]
struct Calls {
    ids: HashSet<String>,
    names: HashSet<String>,
}

/// Refuses a text longer than a message's may be, naming its `field`.
fn within_limit(text: &str, field: impl FnOnce() -> String) -> Result<(), ValidationError> {
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(ValidationError::new(
            field(),
            format!("must be at most {MAX_TEXT_CHARS} characters"),
        ));
    }
    Ok(())
}

fn check_message(
    message: &super::Message,
    at: &str,
    calls: &mut Calls,
) -> Result<(), ValidationError> {
    // A part as the dialects name it: a message's single text is its `content`.
    let field = |j: usize| match message.parts.len() {
        1 => format!("{at}.content"),
        _ => format!("{at}.content[{j}]"),
    };
    let refuse = |j: usize, what: &str| {
        let role = message.role.as_str();
        ValidationError::new(
            field(j),
            format!("a message from the {role} cannot hold {what}"),
        )
    };
    for (j, part) in message.parts.iter().enumerate() {
        match part {
            Part::Text { text } => {
                if message.role == Role::Tool {
                    return Err(refuse(j, "text outside its result"));
                }
                within_limit(text, || field(j))?;
            }
            Part::Anthropic(_) => {
                if !matches!(message.role, Role::User | Role::Assistant) {
                    return Err(refuse(j, "an Anthropic block"));
                }
            }
            Part::Thinking(thinking) => {
                if message.role != Role::Assistant {
                    return Err(refuse(j, "reasoning (only the assistant's is sent back)"));
                }
                within_limit(&thinking.text, || field(j))?;
            }
            Part::Image(_) => {
                if message.role != Role::User {
                    return Err(refuse(j, "an image (images are shown in user messages)"));
                }
            }
            Part::ToolCall(call) => {
                if message.role != Role::Assistant {
                    return Err(refuse(j, "a tool call"));
                }
                tool_name(&call.name)
                    .map_err(|e| ValidationError::new(format!("{}.name", field(j)), e))?;
                if call.id.is_empty() || !calls.ids.insert(call.id.clone()) {
                    return Err(ValidationError::new(
                        format!("{}.id", field(j)),
                        format!("{:?} must be a call id not used before", call.id),
                    ));
                }
                calls.names.insert(call.name.clone());
            }
            Part::ToolResult(result) => {
                if message.role != Role::Tool {
                    return Err(refuse(j, "a tool result"));
                }
                let answers = match (&result.call_id, &result.name) {
                    (Some(id), _) => calls.ids.contains(id),
                    (None, Some(name)) => calls.names.contains(name),
                    (None, None) => false,
                };
                if !answers {
                    let named_by = match result.call_id {
                        Some(_) => "tool_call_id",
                        None => "tool_name",
                    };
                    return Err(ValidationError::new(
                        format!("{at}.{named_by}"),
                        "answers no earlier tool call (by its call id, or else its tool's name)",
                    ));
                }
            }
        }
    }
    let results = message
        .parts
        .iter()
        .filter(|part| matches!(part, Part::ToolResult(_)))
        .count();
    let kept_whole = message
        .parts
        .iter()
        .any(|part| matches!(part, Part::Anthropic(_)));
    let says_something = match message.role {
        Role::Tool => results == 1 && message.parts.len() == 1,
        Role::Assistant => {
            kept_whole
                || message.tool_calls().next().is_some()
                || !message.joined_text().trim().is_empty()
        }
        Role::User => {
            kept_whole
                || message.images().next().is_some()
                || !message.joined_text().trim().is_empty()
        }
        Role::System => !message.joined_text().trim().is_empty(),
    };
    if !says_something {
        let what = match message.role {
            Role::Tool => "must hold exactly one tool result",
            _ => "must not be empty",
        };
        return Err(ValidationError::new(at, what));
    }
    Ok(())
}

fn check_tools(conversation: &Conversation) -> Result<(), ValidationError> {
    let tools = &conversation.tools;
    if tools.len() > MAX_TOOLS {
        return Err(ValidationError::new(
            "tools",
            format!("holds at most {MAX_TOOLS} tools"),
        ));
    }
    let mut names = HashSet::new();
    for (k, tool) in tools.iter().enumerate() {
        tool_name(&tool.name).map_err(|e| ValidationError::new(format!("tools[{k}].name"), e))?;
        if !names.insert(tool.name.as_str()) {
            return Err(ValidationError::new(
                format!("tools[{k}].name"),
                format!("{:?} is offered twice", tool.name),
            ));
        }
        compile_schema(&tool.parameters)
            .map_err(|e| ValidationError::new(format!("tools[{k}].parameters"), e))?;
    }
    match &conversation.tool_choice {
        ToolChoice::Required if tools.is_empty() => Err(ValidationError::new(
            "tool_choice",
            "\"required\" needs tools offered",
        )),
        ToolChoice::Tool(name) if !names.contains(name.as_str()) => Err(ValidationError::new(
            "tool_choice",
            format!("names {name:?}, which is not among the tools offered"),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::{Arguments, JsonSchemaFormat, Message, Tool, ToolCall, ToolResult};
    use super::*;

    fn weather() -> Tool {
        Tool {
            name: "get_weather".into(),
            description: Some("Current weather".into()),
            parameters: json!({ "type": "object",
                                "properties": { "city": { "type": "string" } },
                                "required": ["city"] }),
            strict: false,
        }
    }

    fn call(id: &str) -> Message {
        Message {
            role: Role::Assistant,
            parts: vec![Part::ToolCall(ToolCall {
                id: id.into(),
                name: "get_weather".into(),
                arguments: Arguments::parse(r#"{"city": "Paris"}"#).expect("JSON"),
            })],
        }
    }

    fn result(call_id: Option<&str>, name: Option<&str>) -> Message {
        Message {
            role: Role::Tool,
            parts: vec![Part::ToolResult(ToolResult {
                call_id: call_id.map(Into::into),
                name: name.map(Into::into),
                content: "18°C".into(),
            })],
        }
    }

    fn conversation(messages: Vec<Message>) -> Conversation {
        Conversation {
            messages,
            tools: vec![weather()],
            ..Conversation::default()
        }
    }

    fn refused(conversation: Conversation) -> String {
        conversation.check().expect_err("refused").field
    }

    #[test]
    fn a_tool_round_trip_is_a_valid_conversation() {
        let question = Message::text(Role::User, "Weather in Paris?");
        let by_id = conversation(vec![
            question.clone(),
            call("call_1"),
            result(Some("call_1"), None),
        ]);
        assert_eq!(by_id.check(), Ok(()));
        // Ollama's Python package names the tool and not the call.
        let by_name = conversation(vec![
            question,
            call("call_1"),
            result(None, Some("get_weather")),
        ]);
        assert_eq!(by_name.check(), Ok(()));
    }

    #[test]
    fn a_result_must_answer_an_earlier_call() {
        let question = Message::text(Role::User, "Weather?");
        for (messages, field) in [
            (
                vec![question.clone(), result(Some("call_9"), None)],
                "messages[1].tool_call_id",
            ),
            (
                vec![question.clone(), result(None, Some("get_weather"))],
                "messages[1].tool_name",
            ),
            (
                vec![
                    question.clone(),
                    call("call_1"),
                    result(Some("call_2"), None),
                ],
                "messages[2].tool_call_id",
            ),
            (
                vec![question.clone(), call("call_1"), result(None, None)],
                "messages[2].tool_name",
            ),
            (
                vec![question.clone(), call("call_1"), call("call_1")],
                "messages[2].content.id",
            ),
        ] {
            assert_eq!(refused(conversation(messages)), field);
        }
    }

    #[test]
    fn each_speaker_says_only_what_it_can() {
        let question = Message::text(Role::User, "Weather?");
        let user_calling = Message {
            role: Role::User,
            ..call("call_1")
        };
        let tool_talking = Message::text(Role::Tool, "18°C");
        let blank = Message::text(Role::Assistant, "  ");
        for (messages, field) in [
            (vec![user_calling], "messages[0].content"),
            (vec![question.clone(), tool_talking], "messages[1].content"),
            (vec![question.clone(), blank], "messages[1]"),
            (vec![], "messages"),
        ] {
            assert_eq!(refused(conversation(messages)), field);
        }
    }

    #[test]
    fn tools_are_named_once_with_schemas_that_compile_and_the_choice_names_one() {
        let question = || vec![Message::text(Role::User, "Weather?")];
        let mut twice = conversation(question());
        twice.tools.push(weather());
        assert_eq!(refused(twice), "tools[1].name");

        let mut bad_schema = conversation(question());
        bad_schema.tools[0].parameters = json!({ "type": "nonsense" });
        assert_eq!(refused(bad_schema), "tools[0].parameters");

        let mut unknown_choice = conversation(question());
        unknown_choice.tool_choice = ToolChoice::Tool("get_time".into());
        assert_eq!(refused(unknown_choice), "tool_choice");

        let mut named = conversation(question());
        named.tool_choice = ToolChoice::Tool("get_weather".into());
        assert_eq!(named.check(), Ok(()));

        let required_without_tools = Conversation {
            messages: question(),
            tool_choice: ToolChoice::Required,
            ..Conversation::default()
        };
        assert_eq!(refused(required_without_tools), "tool_choice");
    }

    #[test]
    fn an_answer_schema_must_compile() {
        let format = |schema| {
            OutputFormat::JsonSchema(JsonSchemaFormat {
                name: "product".into(),
                description: None,
                schema,
                strict: true,
            })
        };
        let mut structured = conversation(vec![Message::text(Role::User, "A mug.")]);
        structured.output = format(json!({ "type": "object" }));
        assert_eq!(structured.check(), Ok(()));
        structured.output = format(json!({ "type": 3 }));
        assert_eq!(refused(structured), "output.schema");
    }
}
