"""The server's message format, tokens file and model addresses (no server needed)."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.serve import wire
from AttentionSegLib.serve.client import split_model_url
from AttentionSegLib.serve.tokens import add_user, hash_token, read_tokens, server_tokens, user_of
from conftest import assert_bad_input, attentionseg


def test_messages_carry_arrays_exactly_and_refuse_what_is_not_one():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(2, 5, 6, 7)).astype(np.float32)
    labels = (rng.random((5, 6, 7)) > 0.7).astype(np.uint16)
    body = wire.encode({"spacing": [1.0, 2.0, 3.0]}, {"image": image, "labels": labels}, compress=("labels",))
    header, arrays = wire.decode(body)
    assert header == {"spacing": [1.0, 2.0, 3.0]}
    np.testing.assert_array_equal(arrays["image"], image)
    assert arrays["labels"].dtype == np.uint16
    np.testing.assert_array_equal(arrays["labels"], labels)
    with pytest.raises(wire.WireError, match="bad magic"):
        wire.decode(b"PK\x03\x04" + body[4:])
    with pytest.raises(wire.WireError, match="length"):
        wire.decode(body[:-10])  # truncated
    # An object array (which numpy would unpickle) is refused, never read.
    text = b'{"arrays": [{"name": "x", "dtype": "|O", "shape": [1], "bytes": 8}]}'
    with pytest.raises(wire.WireError, match="bad dtype"):
        wire.decode(wire.MAGIC + struct.pack("<I", len(text)) + text + bytes(8))


def test_a_mask_travels_as_its_bounding_box_and_comes_back_whole():
    mask = np.zeros((40, 50, 60), bool)
    mask[10:14, 20:31, 5:9] = True
    mask[12, 25, 7] = False
    header, arrays = wire.pack_mask(mask)
    assert arrays["mask"].shape == (4, 11, 4) and header["mask_start"] == [10, 20, 5]
    np.testing.assert_array_equal(wire.unpack_mask(header, arrays, mask.shape), mask)
    empty_header, empty = wire.pack_mask(np.zeros((3, 3, 3), bool))
    assert empty == {} and not wire.unpack_mask(empty_header, empty, (3, 3, 3)).any()
    with pytest.raises(wire.WireError, match="shape"):
        wire.unpack_mask(header, arrays, (40, 50, 61))
    header["mask_start"] = [38, 20, 5]
    with pytest.raises(wire.WireError, match="outside"):
        wire.unpack_mask({**header, "mask_shape": None}, arrays, mask.shape)


def test_tokens_file_keeps_hashes_only_and_checks_bearer_headers(tmp_path, monkeypatch):
    path = tmp_path / "tokens"
    alice = add_user(path, "alice")
    bob = add_user(path, "bob")
    text = path.read_text()
    assert alice not in text and bob not in text and hash_token(alice) in text
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    table = read_tokens(path)
    assert user_of(f"Bearer {alice}", table) == "alice" and user_of(f"Bearer {bob}", table) == "bob"
    assert user_of(None, table) is None and user_of(f"Bearer {alice}x", table) is None
    assert user_of(alice, table) is None  # no "Bearer "
    with pytest.raises(AttentionSegError, match="has a token already"):
        add_user(path, "alice")
    with pytest.raises(AttentionSegError, match="user name"):
        add_user(path, "a b")
    assert read_tokens(path) == table  # refusals changed nothing
    path.write_text(text + "carol secret\n")
    with pytest.raises(AttentionSegError, match="line 4 is not"):
        read_tokens(path)
    monkeypatch.delenv("ATTENTIONSEG_TOKEN", raising=False)
    with pytest.raises(AttentionSegError, match="no tokens"):
        server_tokens(None)
    monkeypatch.setenv("ATTENTIONSEG_TOKEN", "one-user")
    assert server_tokens(None) == {hash_token("one-user"): "default"}


def test_serve_token_command_prints_the_token_once(tmp_path):
    path = tmp_path / "tokens"
    result = attentionseg("serve-token", "add", "reader1", "--tokens", path)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert len(token) >= 40 and read_tokens(path) == {hash_token(token): "reader1"}
    assert_bad_input(attentionseg("serve-token", "add", "reader1", "--tokens", path), "has a token already")


def test_model_addresses_split_into_server_and_name():
    assert split_model_url("http://gpu1:8765/models/liver-ct") == ("http://gpu1:8765", "liver-ct")
    assert split_model_url("https://seg.example.org/attentionseg/models/a%20b") == (
        "https://seg.example.org/attentionseg",
        "a b",
    )
    for bad in ("http://gpu1:8765/liver", "http:///models/x", "ftp://h/models/x"):
        with pytest.raises(AttentionSegError, match="HOST:PORT/models/NAME"):
            split_model_url(bad)


def test_serve_refuses_bad_settings_in_one_line(tmp_path):
    empty = tmp_path / "models"
    empty.mkdir()
    one_user = {"ATTENTIONSEG_TOKEN": "x"}
    assert_bad_input(attentionseg("serve", "--models", tmp_path / "none", env=one_user), "models folder not found")
    assert_bad_input(attentionseg("serve", "--models", empty, env=one_user), "no model file")
    (empty / "m.pt").write_bytes(b"")
    assert_bad_input(
        attentionseg("serve", "--models", empty, "--tokens", tmp_path / "missing"), "tokens file not found"
    )
    assert_bad_input(attentionseg("serve", "--models", empty, env={"ATTENTIONSEG_TOKEN": ""}), "no tokens")


class _Scripted:
    """A loopback HTTP server that answers each request with the next (status, body) of a script."""

    def __init__(self, script):
        import http.server
        import threading

        answers = list(script)
        seen = self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server interface
                seen.append(self.headers.get("Authorization"))
                status, body = answers.pop(0)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def test_the_client_repeats_server_errors_and_says_what_failed_in_one_line():
    import socket

    from AttentionSegLib.serve.client import ServerClient, ServerError

    # A dying replica answers 5xx: the request is repeated until a replica answers.
    server = _Scripted([(503, b"{}"), (500, b'{"detail": "ActorDiedError"}'), (200, b'{"models": []}')])
    client = ServerClient(server.url, "secret")
    assert client.models() == [] and client.retried == 2
    assert server.seen == ["Bearer secret"] * 3
    server.close()
    refused = _Scripted([(401, b'{"detail": "token refused"}'), (404, b'{"detail": "model \'x\' is not served here"}')])
    with pytest.raises(ServerError, match=r"token refused \(set ATTENTIONSEG_TOKEN"):
        ServerClient(refused.url, "wrong").models()
    with pytest.raises(ServerError, match="model 'x' is not served here"):
        ServerClient(refused.url, "secret").get_json("/models/x")
    refused.close()
    # Accepted but never answered: a time-out, not a hang.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    with pytest.raises(ServerError, match="no answer within 1 s"):
        ServerClient(f"http://127.0.0.1:{silent.getsockname()[1]}", "t").request("GET", "/models", timeout=1)
    silent.close()
