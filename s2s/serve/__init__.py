"""The turn and the live server: one turn speech in -> speech out (pipeline), generation speed,
voice activity, continuous batching, the conversation WebSocket server and its simulated client,
and what the app serves (allowed folders, cached models)."""
