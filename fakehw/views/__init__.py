"""fakehw.views: pieces the viewers share (process info from the host)."""
