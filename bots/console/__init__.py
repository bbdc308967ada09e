"""The console adapter: an interactive terminal chat, used when no platform is configured."""
