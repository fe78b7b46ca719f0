"""The engine core: programs (RLM, Direct, Auto) over one public Run, the turn skeleton both
loops share, and the parts of a turn (protocol, prompts, guards, signatures, tools)."""
