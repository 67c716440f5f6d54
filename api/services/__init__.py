"""Domain operations behind the routes: path checks, safe uploads, submission, byte ranges."""
