"""Where recordings come from: the Xeno-canto API (`xenocanto`, over `http`), Xeno-canto metadata files
matched to recordings on disk (`metadata`) and Hugging Face dataset folders (`huggingface`)."""
