"""Real rollouts: an openpi-compatible policy server and client, the DROID station, safety limits
and operator-labelled recording. Needs the `robot` extra (websockets, msgpack); the DROID stack
itself (`droid`, polymetis) comes from its own repository."""
