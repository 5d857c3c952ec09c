"""Files and batches: the Files API's storage, OpenAI's Batches and Anthropic's Message
Batches, and the runner that takes each batch's lines through modelport's own routes."""
