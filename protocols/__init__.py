"""Protocols other than seed 004 over the same replies (DESIGN.md section 3b): one module per protocol, each
parsing its request, calling the chats actions, and encoding the same reply events in its own wire format."""
