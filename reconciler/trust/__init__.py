"""Trust: keys, cosign signatures and their manifests, the trust policy, and verification.

Pure building blocks (no network): the steps fetch and push, this package decides. It sits
beside the stores in the layers (DESIGN.md section 6) and never imports them or httpx.
"""
