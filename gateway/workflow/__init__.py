"""The processes the gateway carries: agreements as data, the rules that read them, the engine."""
