"""`bootstrap()`: what `roost up` calls on every start (first start creates, later ones reuse)."""
import os
import stat
import uuid

from roost.demo.definition import demo_definition
from roost.tokenservice.service import bootstrap
from roost.tokenservice.store import Store


def test_first_start_then_again(tmp_path):
    store = Store.open(tmp_path)
    key_file = tmp_path / "admin-key"
    sid = str(uuid.uuid4())
    first = bootstrap(store, node_url="http://127.0.0.1:8080", node_token_id="tid", node_token="t" * 64,
                      definition=demo_definition(sid), key_file=key_file)
    assert first.created and first.user.admin and first.server.uuid == sid and first.node.url == "http://127.0.0.1:8080"
    assert first.api_key and store.authenticate(first.api_key)[0] == first.user
    assert key_file.read_text().strip() == first.api_key
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600

    # second start, on another port with a new node token: same user, key, server; node updated
    again = bootstrap(Store.open(tmp_path), node_url="http://127.0.0.1:9090", node_token_id="tid2",
                      node_token="u" * 64, definition=demo_definition(str(uuid.uuid4())), key_file=key_file)
    assert not again.created
    assert again.user == first.user and again.server.uuid == sid and again.api_key == first.api_key
    assert again.node.id == first.node.id and again.node.port == 9090 and again.node.token == "u" * 64
    assert len(store.list_api_keys()) == 1 and len(store.list_servers()) == 1

    # a revoked key is replaced
    store.revoke_api_key(first.api_key[:16])
    third = bootstrap(store, node_url="http://127.0.0.1:9090", node_token_id="tid2", node_token="u" * 64,
                      definition=demo_definition(sid), key_file=key_file)
    assert third.api_key != first.api_key and store.authenticate(third.api_key) is not None


def test_without_a_key_file_the_key_is_shown_once(tmp_path):
    store = Store.open(tmp_path)
    args = dict(node_url="http://127.0.0.1:8080", node_token_id="tid", node_token="t" * 64,
                definition=demo_definition(str(uuid.uuid4())))
    assert bootstrap(store, **args).api_key is not None
    assert bootstrap(store, **args).api_key is None
