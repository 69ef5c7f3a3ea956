"""roost's built-in token service: the panel side a fresh machine needs.

- `store.py`      SQLite store (users, client API keys, nodes, servers, subusers, revocations)
- `service.py`    `TokenService`: operations that must reach a node, websocket tokens; `bootstrap()`
- `app.py`        aiohttp: client API (`/api/client`, http-api §3) and remote API (`/api/remote`, §2)
- `issuer.py`     websocket JWTs with exactly a panel's claims
- `access.py`     who may do what (permissions, server states); `views.py` documents; `errors.py`
- `nodeclient.py` the node API calls a panel makes
"""
