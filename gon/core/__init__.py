"""The GON library: coordinate encodings, blocks, the implicit decoder, the GON, the
closed-form latents, the training step, coordinates and sampling. It imports torch only
(and nothing from gon.app); `from gon import ...` re-exports its public names.
"""
