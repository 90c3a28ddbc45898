"""JSON over HTTP, as both listeners speak it: Matrix errors, path routing, bodies, answers.

The client API and the federation listener differ in who they authenticate
(a user's token, a server's X-Matrix signature) and in what a route carries;
the rest is the same and lives here, below both (tests/test_layers.py).
"""
