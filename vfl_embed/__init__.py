"""vfl_embed: vertical federated learning on shared autoencoder latents, on Flower.

The data path, module by module: ``data`` (peer tables, preprocessing) ->
``autoencoder`` (peer encoders) -> ``alignment`` and ``protocol`` (what crosses
the wire) -> ``strategy`` (the server's vertical strategy) -> ``downstream``
(the model on the joined latents) -> ``report``.
"""

__version__ = "0.1.0"
