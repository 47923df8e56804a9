"""The chat-agnostic command language: the command table (`table`), the parser (`parser`), the
handlers (`lifecycle`, `control`, `info`, `requests`) and their name-to-handler table (`registry`).
Handlers see no chat SDK types: `bot.adapters.base` values and `controller` values only."""
