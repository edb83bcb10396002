"""Baseline for `make bench`: a bare Flask endpoint that only parses the same JSON."""

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.route("/cluster", methods=["POST"])
def cluster():
    data = request.get_json(force=True)
    return jsonify({"_id": data["_id"], "cluster": 1})
