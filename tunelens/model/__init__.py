"""The model layer: specs (embedded names, directories, .gguf files, cached Hub ids) loaded into one model,
adapters (read with bounds, checked against their base, attached, written portable), the one prompt
format, and export (an adapter merged into its base).

May import: the leaf modules (config, errors, io, runtime, hashing). Nothing else of tunelens.
"""
