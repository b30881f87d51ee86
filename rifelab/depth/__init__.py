"""RollingDepth's depth co-alignment (snippets, loss, optimisation, stopping rules) and synthetic depth."""
