"""Push: the spec's push rules, their evaluation for every local member of a room, the
notification counts they leave behind, and delivery to push gateways."""
