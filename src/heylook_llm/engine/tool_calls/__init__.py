"""Tool calling: native call formats (detection, grammar, streaming parser) and the engine stage that uses them."""
