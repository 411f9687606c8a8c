//! A chat server with plugins, as small as it can be: the recipe for an
//! application that defines its own hooks and its own host API on plugvisor.
//!
//! - `chat.v1.MessageHooks` (proto/chat/v1/chat.proto) is a hook the chat
//!   server calls on its plugins before it posts a message; a plugin may
//!   change the message or reject it.
//! - `chat.v1.ChatApi` is what the chat server offers its plugins beside
//!   plugvisor's own host API: here, `GetUser`. Each call knows which plugin
//!   makes it ([`plugvisor::CallerPlugin`]).
//!
//! ```sh
//! chat-host [--python PATH] [--banned WORDS] [--fan-out] PLUGINS_DIR USER:TEXT...
//! ```
//!
//! Each message goes through the plugins that serve MessageHooks in turn (a
//! filter chain, by plugin id), or, with `--fan-out`, to all of them at once
//! (each answer printed on its own).

mod chat {
    tonic::include_proto!("chat.v1");
}

use std::collections::BTreeMap;
use std::time::Duration;

use chat::chat_api_server::{ChatApi, ChatApiServer};
use chat::message_hooks_client::MessageHooksClient;
use chat::{GetUserRequest, GetUserResponse, Message, MessageWillBePostedRequest, User};
use plugvisor::{CallerPlugin, Environment, EnvironmentConfig, LaunchOptions};
use tonic::{Request, Response, Status};

const HOOKS: &str = "chat.v1.MessageHooks";
/// How long one plugin may take to answer a hook.
const HOOK_TIMEOUT: Duration = Duration::from_secs(2);

/// The chat server's users, served to plugins by `ChatApi/GetUser`.
struct Users(BTreeMap<&'static str, &'static str>);

#[tonic::async_trait]
impl ChatApi for Users {
    async fn get_user(
        &self,
        request: Request<GetUserRequest>,
    ) -> Result<Response<GetUserResponse>, Status> {
        let caller = request
            .extensions()
            .get::<CallerPlugin>()
            .map_or("?", |c| c.id())
            .to_string();
        let id = request.into_inner().user_id;
        eprintln!("chat-host: {caller} looked up user {id:?}");
        let user = self.0.get(id.as_str()).map(|name| User {
            id: id.clone(),
            display_name: name.to_string(),
        });
        Ok(Response::new(GetUserResponse {
            found: user.is_some(),
            user,
        }))
    }
}

struct Args {
    python: Option<String>,
    banned: Option<String>,
    fan_out: bool,
    plugins_dir: String,
    messages: Vec<(String, String)>,
}

fn args() -> Result<Args, String> {
    let usage =
        "usage: chat-host [--python PATH] [--banned WORDS] [--fan-out] PLUGINS_DIR USER:TEXT...";
    let mut args = std::env::args().skip(1);
    let (mut python, mut banned, mut fan_out, mut rest) = (None, None, false, Vec::new());
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--python" => python = Some(args.next().ok_or(usage)?),
            "--banned" => banned = Some(args.next().ok_or(usage)?),
            "--fan-out" => fan_out = true,
            _ => rest.push(arg),
        }
    }
    let mut rest = rest.into_iter();
    let plugins_dir = rest.next().ok_or(usage)?;
    let messages = rest
        .map(|m| {
            m.split_once(':')
                .map(|(user, text)| (user.to_string(), text.to_string()))
                .ok_or_else(|| format!("{m:?} is not USER:TEXT; {usage}"))
        })
        .collect::<Result<_, _>>()?;
    Ok(Args {
        python,
        banned,
        fan_out,
        plugins_dir,
        messages,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args()?;
    let users = Users(BTreeMap::from([("u1", "Ada"), ("u2", "Grace")]));
    let mut launch = LaunchOptions::builder();
    if let Some(python) = &args.python {
        launch = launch.interpreter(python);
    }
    let mut config = EnvironmentConfig::builder(&args.plugins_dir)
        .launch(launch.build()?)
        .host_service(ChatApiServer::new(users));
    if let Some(words) = &args.banned {
        let mut values = plugvisor::serde_json::Map::new();
        values.insert("banned_words".into(), words.as_str().into());
        config = config.plugin_configuration("censor-python", values);
    }
    let env = Environment::new(config.build()?)?;
    for id in env.plugin_ids() {
        if let Err(error) = env.activate(&id).await {
            eprintln!("chat-host: {error}");
        }
    }
    for (user, text) in args.messages {
        let message = Message {
            channel: "general".into(),
            user_id: user,
            text,
        };
        if args.fan_out {
            fan_out(&env, message).await;
        } else {
            match chain(&env, message).await {
                Ok(posted) => println!("posted: {}", posted.text),
                Err((plugin, reason)) => println!("rejected by {plugin}: {reason}"),
            }
        }
    }
    env.shutdown().await;
    Ok(())
}

/// Each plugin that serves the hook, in id order, sees the message as the
/// one before it left it; the first rejection ends the chain.
async fn chain(env: &Environment, mut message: Message) -> Result<Message, (String, String)> {
    for (id, channel) in env.plugins_serving(HOOKS) {
        let request = MessageWillBePostedRequest {
            message: Some(message.clone()),
        };
        let mut client = MessageHooksClient::new(channel);
        match tokio::time::timeout(HOOK_TIMEOUT, client.message_will_be_posted(request)).await {
            Ok(Ok(answer)) => {
                let answer = answer.into_inner();
                if !answer.rejection.is_empty() {
                    return Err((id, answer.rejection));
                }
                if let Some(changed) = answer.message {
                    message = changed;
                }
            }
            // A broken plugin must not stop the chat: skip it.
            Ok(Err(status)) => eprintln!("chat-host: {id}: {}", status.message()),
            Err(_) => eprintln!("chat-host: {id} did not answer within {HOOK_TIMEOUT:?}"),
        }
    }
    Ok(message)
}

/// Every plugin at once, each under its own timeout (RunMultiPluginHook).
async fn fan_out(env: &Environment, message: Message) {
    let request = MessageWillBePostedRequest {
        message: Some(message),
    };
    let answers = env
        .call_each(HOOKS, HOOK_TIMEOUT, |_id, channel| {
            let request = request.clone();
            async move {
                let answer = MessageHooksClient::new(channel)
                    .message_will_be_posted(request)
                    .await?;
                Ok(answer.into_inner())
            }
        })
        .await;
    for (id, answer) in answers {
        match answer {
            Ok(answer) if !answer.rejection.is_empty() => {
                println!("{id}: rejects: {}", answer.rejection)
            }
            Ok(answer) => println!(
                "{id}: posts: {}",
                answer
                    .message
                    .map(|m| m.text)
                    .unwrap_or_else(|| "(unchanged)".into())
            ),
            Err(error) => println!("{id}: {error}"),
        }
    }
}
