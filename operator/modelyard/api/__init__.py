"""The `modelyard.dev/v1alpha1` API: typed models of the four kinds and the CRDs made from them."""
