"""Baseline for `make bench`: the original 30-line service, as it was written.

It builds a pandas DataFrame per request and calls scikit-learn's ``transform``.
Only its model file is today's (the original pickle no longer loads).
"""

from pathlib import Path

import joblib
import pandas as pd
from flask import Flask, jsonify, request
from flask_cors import CORS

from nomads_cluster.segmentation.interests import INTEREST_KEYS

app = Flask(__name__)
CORS(app)
model = joblib.load(Path(__file__).resolve().parent.parent / "model" / "model.pkl")


@app.route("/cluster", methods=["POST"])
def cluster():
    data = request.get_json(force=True)
    row = {key: [int(data["interests"].get(key, False))] for key in INTEREST_KEYS}
    features = pd.DataFrame(row)
    segment = int(model.transform(features).argmax()) + 1
    return jsonify({"_id": data["_id"], "cluster": segment})
