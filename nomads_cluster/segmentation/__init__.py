"""The segmentation model: the interests, the scorer, loading and training models, and
drift. Arrays in, arrays out: nothing here speaks HTTP or SQL (``web.served_model`` hands
the loaded model to the app)."""
