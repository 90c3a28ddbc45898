"""Application services (bridges): their registrations, the durable transaction sender
that pushes events to them, and the queries Roost asks them."""
