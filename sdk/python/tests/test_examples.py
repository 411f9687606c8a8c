"""The example plugins under a host: hello-python and the chat example's censor-python."""

from __future__ import annotations

import json

import pytest
from hostkit import EXAMPLE, ROOT

from plugvisor_plugin.testing import ConfigurationRefused, PluginHost

CENSOR_DIR = ROOT / "examples" / "chat-host" / "plugins" / "censor-python"


def schema_defaults(bundle) -> dict:
    manifest = json.loads((bundle / "plugin.json").read_text())
    return {s["key"]: s["default"] for s in manifest["settings_schema"]["settings"]}


# -- hello-python ------------------------------------------------------------------------


def test_hello_counts_activations_and_logs_through_the_host():
    config = schema_defaults(EXAMPLE.parent)
    assert config == {"greeting": "Hello", "shout": False}
    kv: dict[str, bytes] = {}
    for n in (1, 2):
        with PluginHost(EXAMPLE, plugin_id="hello-python", configuration=config, kv_data=kv) as host:
            assert host.implemented is not None
            assert set(host.implemented.hooks) >= {"OnActivate", "OnConfigurationChange", "OnDeactivate"}
            kv = host.kv.data
            assert kv["activations"] == str(n).encode()
        first, last = host.logs.records[0], host.logs.records[-1]
        assert (first.message, first.fields) == ("activated", {"greeting": "Hello", "activations": str(n)})
        assert (last.message, last.fields) == ("goodbye", {"activations": str(n)})


def test_hello_reacts_to_a_configuration_change():
    with PluginHost(EXAMPLE, configuration={"greeting": "Hello", "shout": False}) as host:
        host.configure({"greeting": "Hi", "shout": True})
        assert host.logs.records[-1].fields == {"greeting": "HI"}
        with pytest.raises(ConfigurationRefused) as e:
            host.configure({"greeting": " ", "shout": False})
        assert e.value.refusal == "the greeting must not be empty"
        assert host.configuration == {"greeting": "Hi", "shout": True}


# -- censor-python ------------------------------------------------------------------------


def _chat():
    import sys

    sys.path.insert(0, str(CENSOR_DIR))
    try:
        from chat.v1 import chat_pb2, chat_pb2_grpc
    finally:
        sys.path.remove(str(CENSOR_DIR))
    return chat_pb2, chat_pb2_grpc


chat_pb2, chat_pb2_grpc = _chat()


class FakeChatApi(chat_pb2_grpc.ChatApiServicer):
    """The chat server's ChatApi, as a test plays it."""

    users = {"u1": "Ada Lovelace"}

    def __init__(self) -> None:
        self.asked: list[str] = []

    def GetUser(self, request, context):
        self.asked.append(request.user_id)
        name = self.users.get(request.user_id)
        if name is None:
            return chat_pb2.GetUserResponse(found=False)
        return chat_pb2.GetUserResponse(found=True, user=chat_pb2.User(id=request.user_id, display_name=name))


def post(host: PluginHost, text: str, user_id: str = "u1"):
    hooks = chat_pb2_grpc.MessageHooksStub(host.channel)
    message = chat_pb2.Message(channel="town-square", user_id=user_id, text=text)
    return hooks.MessageWillBePosted(chat_pb2.MessageWillBePostedRequest(message=message), timeout=30)


def censor(chat: FakeChatApi, **config) -> PluginHost:
    configuration = {**schema_defaults(CENSOR_DIR), **config}
    add = lambda server: chat_pb2_grpc.add_ChatApiServicer_to_server(chat, server)  # noqa: E731
    return PluginHost(CENSOR_DIR / "plugin.py", plugin_id="censor-python", configuration=configuration, host_services=[add])


def test_censor_rejects_banned_words_naming_the_author():
    chat = FakeChatApi()
    with censor(chat) as host:
        assert host.implemented is not None
        assert "chat.v1.MessageHooks" in host.implemented.services
        assert post(host, "a fine message").rejection == ""
        assert post(host, "spammy words are words too").rejection == ""  # whole words only
        answer = post(host, "buy SPAM now")
        assert answer.rejection == "Ada Lovelace, your message was not posted: it contains the banned word 'spam'."
        assert chat.asked == ["u1"]
        # An unknown author is named by id.
        assert post(host, "spam", user_id="u9").rejection.startswith("u9, your message")


def test_censor_follows_its_configuration():
    chat = FakeChatApi()
    with censor(chat, banned_words="foo, bar baz") as host:
        assert post(host, "spam is fine here").rejection == ""
        assert "'bar baz'" in post(host, "say bar baz").rejection
        host.configure({"banned_words": "spam"})
        assert "'spam'" in post(host, "spam").rejection
        with pytest.raises(ConfigurationRefused):
            host.configure({"banned_words": 42})
        assert "'spam'" in post(host, "spam").rejection



def test_hello_serves_a_page_and_its_status():
    config = {"greeting": "Hi", "shout": True}
    with PluginHost(EXAMPLE, plugin_id="hello-python", configuration=config, kv_data={"activations": b"4"}) as host:
        assert host.implemented is not None and "ServeHTTP" in host.implemented.hooks
        page = host.http("GET", "/")
        assert page.status == 200 and page.header("content-type") == "text/html; charset=utf-8"
        assert b"<h1>HI from Python!</h1>" in page.body and b"Activated 5 time(s)" in page.body
        assert b'href="/plugins/hello-python/status.json"' in page.body
        status = host.http("GET", "/status.json")
        assert status.json() == {"plugin_id": "hello-python", "greeting": "HI", "configuration": config, "activations": 5}
        host.configure({"greeting": "Hey", "shout": False})
        assert host.http("GET", "/status.json").json()["greeting"] == "Hey"
        assert host.http("GET", "/nothing").status == 404
