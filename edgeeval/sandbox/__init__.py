"""Everything that runs untrusted code or templates: the OS jail (bubblewrap, sandbox-exec),
the code-check parent and its boot child, and the chat-template renderer and its child."""
