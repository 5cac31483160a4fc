"""The status page: the daemon's `/status` as HTML for people (GET /, /specs/NAME), with its
stylesheet and script shipped in `static/` (no external asset, no build step).

`page` renders (pure: values in, text out, every value escaped); `site` answers the HTTP
requests for it (the board's view, the metrics' counters, caching and security headers).
"""
