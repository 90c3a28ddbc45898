"""The /_synapse/admin API: what operators' tools (synapse-admin, register_new_matrix_user,
scripts) already speak, served beside the client API on the same JSON resource."""
