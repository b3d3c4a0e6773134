//! OpenAI Batch API input files: JSONL lines `{"custom_id", "method": "POST", "url", "body"}`,
//! each body a Chat Completions, Responses or Embeddings request, turned into Tollgate's batch
//! items. Only what Tollgate can honour is accepted: any other body parameter (tools, images,
//! `n`, streaming) is refused by name rather than silently dropped.

use serde::Deserialize;
use serde_json::Value;

use tollgate_core::domain::openai_batch::Endpoint;
use tollgate_core::domain::{
    BatchItem, ChatRequest, EmbeddingRequest, GenerationOptions, MAX_BATCH_ITEMS, ValidationError,
};

use super::requests::{ChatCompletionBody, EmbeddingsBody, EncodingFormat, ResponsesBody};

/// What is wrong with an input file: the line (1-based), the field in it, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {field}: {message}")]
pub struct InputError {
    pub line: usize,
    pub field: String,
    pub message: String,
}

impl InputError {
    pub fn new(line: usize, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            line,
            field: field.into(),
            message: message.into(),
        }
    }
}

/// One line of an input file, before its body is read.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Line {
    custom_id: String,
    method: String,
    url: String,
    body: Value,
}

/// An input file's lines with their 1-based line numbers (blank lines skipped), each checked for
/// the line's own shape: a JSON object with `custom_id`, `method: "POST"` and a known `url`. What
/// an upload is held to; the bodies are judged when a batch is made from the file.
pub fn lines(text: &str) -> Result<Vec<(usize, &str)>, InputError> {
    numbered(text, |number, line| {
        let parsed = read_line(number, line)?;
        if Endpoint::parse(&parsed.url).is_none() {
            return Err(InputError::new(
                number,
                "url",
                format!(
                    "must be one of {}",
                    Endpoint::ALL.map(Endpoint::as_str).join(", ")
                ),
            ));
        }
        Ok(())
    })
}

/// The lines of a file that passed [`lines`] at upload, numbered, without parsing them again:
/// [`items`] parses each once.
pub fn stored_lines(text: &str) -> Result<Vec<(usize, &str)>, InputError> {
    numbered(text, |_, _| Ok(()))
}

/// The non-blank lines with their 1-based numbers, at most [`MAX_BATCH_ITEMS`] and at least one,
/// each passed to `check` in order.
fn numbered(
    text: &str,
    mut check: impl FnMut(usize, &str) -> Result<(), InputError>,
) -> Result<Vec<(usize, &str)>, InputError> {
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let number = index + 1;
        if found.len() == MAX_BATCH_ITEMS {
            return Err(InputError::new(
                number,
                "file",
                format!("a batch file holds at most {MAX_BATCH_ITEMS} requests"),
            ));
        }
        check(number, line)?;
        found.push((number, line));
    }
    if found.is_empty() {
        return Err(InputError::new(1, "file", "holds no requests"));
    }
    Ok(found)
}

fn read_line(number: usize, line: &str) -> Result<Line, InputError> {
    let parsed: Line = serde_json::from_str(line).map_err(|e| {
        let message = if e.is_data() {
            e.to_string()
        } else {
            let (column, message) = tollgate_core::domain::line_syntax_error(&e);
            format!("column {column}: {message}")
        };
        InputError::new(number, "line", format!("is not a request line: {message}"))
    })?;
    if parsed.method != "POST" {
        return Err(InputError::new(number, "method", "must be \"POST\""));
    }
    if let Some(field) = tollgate_core::domain::nul_in_json(line.as_bytes()) {
        return Err(InputError::new(
            number,
            field,
            tollgate_core::domain::NUL_REFUSED,
        ));
    }
    Ok(parsed)
}

/// A file's requests as batch items, all for `endpoint` and one model (returned with them). The
/// items still pass [`tollgate_core::domain::BatchSpec::items`], which judges their content.
pub fn items(
    endpoint: Endpoint,
    lines: &[(usize, &str)],
) -> Result<(String, Vec<BatchItem>), InputError> {
    let mut model: Option<(String, usize)> = None;
    let mut items = Vec::with_capacity(lines.len());
    for &(number, text) in lines {
        let line = read_line(number, text)?;
        if line.url != endpoint.as_str() {
            return Err(InputError::new(
                number,
                "url",
                format!(
                    "is {:?}, but the batch's endpoint is {:?}",
                    line.url,
                    endpoint.as_str()
                ),
            ));
        }
        let (line_model, item) = body_item(endpoint, line.custom_id, line.body)
            .map_err(|(field, message)| InputError::new(number, field, message))?;
        match &model {
            None => model = Some((line_model, number)),
            Some((first, first_line)) if *first != line_model => {
                return Err(InputError::new(
                    number,
                    "body.model",
                    format!(
                        "is {line_model:?}, but line {first_line} uses {first:?}: a batch runs one model"
                    ),
                ));
            }
            Some(_) => {}
        }
        items.push(item);
    }
    let (model, _) = model.ok_or_else(|| InputError::new(1, "file", "holds no requests"))?;
    Ok((model, items))
}

/// A field at fault (`body.temperature`) and why.
type BodyError = (String, String);

fn body_item(
    endpoint: Endpoint,
    custom_id: String,
    body: Value,
) -> Result<(String, BatchItem), BodyError> {
    let mut item = BatchItem {
        custom_id,
        prompt: None,
        messages: None,
        conversation: None,
        input: None,
        options: None,
        output: None,
        fields: None,
    };
    let model = match endpoint {
        Endpoint::Embeddings => {
            let request = embeddings_line(body)?;
            item.input = Some(request.input);
            request.model
        }
        Endpoint::ChatCompletions | Endpoint::Responses => {
            let request = chat_line(endpoint, body)?;
            item.options = Some(request.options).filter(|o| *o != GenerationOptions::default());
            item.conversation = Some(request.conversation);
            request.model
        }
    };
    Ok((model.as_str().to_owned(), item))
}

/// A chat line's body in either dialect; a batch's calls never stream.
fn chat_line(endpoint: Endpoint, body: Value) -> Result<ChatRequest, BodyError> {
    let (request, stream) = match endpoint {
        Endpoint::Responses => {
            let response = parse_body::<ResponsesBody>(body)?
                .parse()
                .map_err(invalid_body)?;
            (response.request, response.stream)
        }
        _ => {
            let chat = parse_body::<ChatCompletionBody>(body)?
                .parse()
                .map_err(invalid_body)?;
            (chat.request, chat.stream)
        }
    };
    if stream {
        return Err((
            "body.stream".to_owned(),
            "a batch request cannot stream".to_owned(),
        ));
    }
    Ok(request)
}

/// An embeddings line's body: floats at the model's own dimensions only.
fn embeddings_line(body: Value) -> Result<EmbeddingRequest, BodyError> {
    let (request, format) = parse_body::<EmbeddingsBody>(body)?
        .parse()
        .map_err(invalid_body)?;
    if format != EncodingFormat::Float {
        return Err((
            "body.encoding_format".into(),
            "only \"float\" is supported".into(),
        ));
    }
    if request.dimensions.is_some() {
        return Err((
            "body.dimensions".into(),
            "is not supported in a batch".into(),
        ));
    }
    Ok(request)
}

/// A body's invalid field, named from the line.
fn invalid_body(error: ValidationError) -> BodyError {
    (format!("body.{}", error.field), error.message)
}

/// A line's body in its endpoint's dialect; a field of the wrong shape is named (`body.temperature`).
fn parse_body<T: serde::de::DeserializeOwned>(body: Value) -> Result<T, BodyError> {
    serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "body".to_owned()
        } else {
            format!("body.{path}")
        };
        (field, e.inner().to_string())
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use tollgate_core::domain::EmbeddingInput;
    use tollgate_core::domain::conversation::{Message, OutputFormat, Role};

    fn file(lines: &[Value]) -> String {
        lines
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn line(custom_id: &str, url: &str, body: Value) -> Value {
        json!({ "custom_id": custom_id, "method": "POST", "url": url, "body": body })
    }

    #[test]
    fn chat_completion_lines_become_chat_items() {
        let text = file(&[
            line(
                "a",
                "/v1/chat/completions",
                json!({ "model": "m", "max_tokens": 20, "messages": [
                    { "role": "developer", "content": "Be brief." },
                    { "role": "user", "content": [{ "type": "text", "text": "Hi" }] },
                ]}),
            ),
            line(
                "b",
                "/v1/chat/completions",
                json!({ "model": "m", "messages": [{ "role": "user", "content": "Yo" }],
                        "tools": [{ "type": "function", "function": { "name": "lookup" } }],
                        "response_format": { "type": "json_schema", "json_schema": {
                            "name": "product", "schema": { "type": "object" }, "strict": true } } }),
            ),
        ]);
        let text = format!("\n{text}\n");
        let lines = lines(&text).expect("lines");
        assert_eq!(lines.iter().map(|l| l.0).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(stored_lines(&text).expect("stored"), lines);
        let (model, items) = items(Endpoint::ChatCompletions, &lines).expect("items");
        assert_eq!(model, "m");
        let messages = &items[0].conversation.as_ref().expect("a chat").messages;
        assert_eq!(messages[0].role, Role::System);
        assert_eq!(messages[1], Message::text(Role::User, "Hi"));
        assert_eq!(
            items[0].options.as_ref().and_then(|o| o.max_tokens),
            Some(20)
        );
        assert!(items[1].options.is_none());
        assert_eq!(items[1].custom_id, "b");
        let conversation = items[1].conversation.as_ref().expect("a chat");
        assert_eq!(conversation.tools[0].name, "lookup");
        assert!(
            matches!(&conversation.output, OutputFormat::JsonSchema(f) if f.name == "product"),
            "a line's schema is kept, to be enforced"
        );
    }

    #[test]
    fn responses_lines_take_instructions_as_a_system_message() {
        let text = file(&[line(
            "r",
            "/v1/responses",
            json!({ "model": "m", "instructions": "Terse.", "input": "Tea?",
                    "max_output_tokens": 9 }),
        )]);
        let (_, items) = items(Endpoint::Responses, &lines(&text).expect("lines")).expect("items");
        let messages = &items[0].conversation.as_ref().expect("a chat").messages;
        assert_eq!(
            messages[..],
            [
                Message::text(Role::System, "Terse."),
                Message::text(Role::User, "Tea?")
            ]
        );
        assert_eq!(
            items[0].options.as_ref().and_then(|o| o.max_tokens),
            Some(9)
        );
    }

    #[test]
    fn embedding_lines_keep_their_input() {
        let text = file(&[line(
            "e",
            "/v1/embeddings",
            json!({ "model": "m", "input": ["a", "b"], "encoding_format": "float" }),
        )]);
        let (_, items) = items(Endpoint::Embeddings, &lines(&text).expect("lines")).expect("items");
        assert_eq!(
            items[0].input,
            Some(EmbeddingInput::Many(vec!["a".into(), "b".into()]))
        );
    }

    #[test]
    fn errors_name_the_line_and_the_field() {
        let chat = |body: Value| file(&[line("a", "/v1/chat/completions", body)]);
        let cases = [
            (
                chat(
                    json!({ "model": "m", "messages": [{ "role": "user", "content": "x" }],
                             "tools": [{ "type": "function", "function": { "name": "f" } }],
                             "tool_choice": "sometimes" }),
                ),
                "body.tool_choice",
            ),
            (
                chat(json!({ "model": "m", "messages": [{ "role": "tool", "content": "x" }] })),
                "body.messages[0].tool_call_id",
            ),
            (
                chat(
                    json!({ "model": "m", "messages": [{ "role": "user", "content": [
                    { "type": "input_audio", "input_audio": { "data": "x" } }] }] }),
                ),
                "body.messages[0].content[0].type",
            ),
            (
                chat(json!({ "model": "m", "stream": true,
                             "messages": [{ "role": "user", "content": "x" }] })),
                "body.stream",
            ),
            (
                chat(json!({ "model": "m", "temperature": "hot", "messages": [] })),
                "body.temperature",
            ),
        ];
        for (text, field) in cases {
            let error = items(Endpoint::ChatCompletions, &lines(&text).expect("lines"))
                .expect_err("refused");
            assert_eq!((error.line, error.field.as_str()), (1, field), "{error}");
        }
        let mixed = file(&[
            line("a", "/v1/embeddings", json!({ "model": "m", "input": "x" })),
            line("b", "/v1/embeddings", json!({ "model": "n", "input": "y" })),
        ]);
        let error =
            items(Endpoint::Embeddings, &lines(&mixed).expect("lines")).expect_err("two models");
        assert_eq!((error.line, error.field.as_str()), (2, "body.model"));
        let error = items(Endpoint::ChatCompletions, &lines(&mixed).expect("lines"))
            .expect_err("another endpoint");
        assert_eq!(error.field, "url");
    }

    #[test]
    fn a_file_is_held_to_the_line_shape() {
        let get = json!({ "custom_id": "a", "method": "GET", "url": "/v1/embeddings", "body": {} });
        assert_eq!(lines(&get.to_string()).expect_err("GET").field, "method");
        let other = line("a", "/v1/images/generations", json!({}));
        assert_eq!(lines(&other.to_string()).expect_err("url").field, "url");
        assert_eq!(lines("{\"custom_id\":").expect_err("broken").field, "line");
        assert_eq!(lines(" \n").expect_err("empty").field, "file");
        let one = line("a", "/v1/embeddings", json!({}));
        let many = vec![one.to_string(); MAX_BATCH_ITEMS + 1].join("\n");
        let error = lines(&many).expect_err("too many");
        assert_eq!(
            (error.line, error.field.as_str()),
            (MAX_BATCH_ITEMS + 1, "file")
        );
    }
}
