"""The web page (`GET /ui`): a chat with any model and a live dashboard of the server, served from files inside
the package (no build step), plus the JSON and event-stream endpoints the dashboard reads."""
