"""Everything the one admission path decides: hosts and origins, tokens and play tokens,
client addresses, rate and connection limits, and validation of what clients send.
Imports only the engine's vocabulary and addresses; no request objects (the edges hand
`admission.admit` what a request says)."""
