"""The service: the daemon that runs the model in its thread and serves it on the socket
(event loop, operations, authentication, PID watching, when to save: the file itself is
``fakehw.persist``'s), the wire protocol, the client every program uses, and the
runtime directory they meet in."""
