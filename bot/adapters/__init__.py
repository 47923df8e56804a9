"""Chat transports. Each adapter converts its platform's messages to `IncomingCommand`s and renders
`Reply`/`Notification` values back; none holds bot logic (see `bot.adapters.base`)."""
