"""Iterative split learning over Flower's Message API, a baseline for vfl_embed.

Each peer trains a bottom model on its own columns; the server holds the
labels and the top model. Every training step the server asks all peers for
the activations of one mini-batch of aligned rows and sends each peer the
gradient of the loss with respect to its activations (the scheme of Flower's
``examples/vertical-fl``, one batch per step instead of the whole table).
"""
