"""The web UI the gateway serves: storefront, live order page, kitchen and courier boards, and the
operations console, rendered on the server (Jinja2) and kept live with htmx and server-sent events."""
