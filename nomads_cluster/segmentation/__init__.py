"""The segmentation model: the interests, the scorer, loading and training models, and
drift. Arrays in, arrays out: nothing here speaks HTTP or SQL (``model.init_app`` only
hands the loaded model to the app)."""
