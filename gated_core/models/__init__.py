"""Models and their MLP weights, one module per concern:

- `registry`: the names a user may give (paper models, the seed's aliases, embedded models);
- `sources`: turning a name into a local checkpoint folder or GGUF file (`ModelSource`);
- `arch`: shapes and family from config.json or a GGUF header (`ArchInfo`);
- `readers`: the MLP weights layer by layer, low-memory or through TransformerLens;
- `loading`: tokenizers, Hugging Face models and TransformerLens bridges;
- `glu`: the sign refactoring of gated neurons.

Every layer comes out neuron-major: `gate`, `lin`, `out` of shape [neuron d_model].
"""
