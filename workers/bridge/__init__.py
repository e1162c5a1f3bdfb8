"""The liveCalls bridge: pushes transcript events to agent UIs, routes control back."""
