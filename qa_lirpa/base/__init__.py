"""The ground floor: what every room may import; imports nothing of qa_lirpa above it."""
