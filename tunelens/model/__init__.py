"""The model layer: load a spec (embedded name, model directory, .gguf file, cached Hub id) into one
loaded model, adapters (read with bounds, checked against their base, attached, written portable),
the one prompt format and chat templates, and export (an adapter merged into its base).

May import: the leaf modules (config, errors, io, runtime, hashing). Nothing else of tunelens.
Modules: load (specs, cache, device and dtype, attach), loaded (LoadedModel; is an adapter attached),
adapters / adapter_files / adapter_writer, prompts, export.
"""
