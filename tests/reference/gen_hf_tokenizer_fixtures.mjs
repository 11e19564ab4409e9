// Reference encodings for the Hugging Face tokenizer.json support (tests/test_hf_tokenizer.cpp),
// computed by an independent implementation: @lenml/tokenizers (a JavaScript port of
// transformers.js's tokenizers). Run by gen_hf_tokenizer_fixtures.sh; never at test time.
//
// usage: node gen_hf_tokenizer_fixtures.mjs TOKENIZERS_MAIN_MJS TOKENIZER_DIR NAME CORPUS OUT
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";

const [mainMjs, tokDir, name, corpusPath, outPath] = process.argv.slice(2);
const { TokenizerLoader } = await import(mainMjs);
const jsonText = readFileSync(`${tokDir}/tokenizer.json`);
const tokenizer = TokenizerLoader.fromPreTrained({
  tokenizerJSON: JSON.parse(jsonText),
  tokenizerConfig: JSON.parse(readFileSync(`${tokDir}/tokenizer_config.json`)),
});
const corpus = JSON.parse(readFileSync(corpusPath, "utf8"));
const cases = corpus.map((text) => {
  const ids = tokenizer.encode(text, { add_special_tokens: false });
  return {
    text,
    ids,
    ids_with_special_tokens: tokenizer.encode(text, { add_special_tokens: true }),
    // decode() rejects an empty array; the empty text decodes to "".
    decoded:
      ids.length === 0
        ? ""
        : tokenizer.decode(ids, { skip_special_tokens: false, clean_up_tokenization_spaces: false }),
  };
});
const fixture = {
  generator: "tests/reference/gen_hf_tokenizer_fixtures.sh (@lenml/tokenizers 3.7.2)",
  tokenizer: name,
  tokenizer_json_sha256: createHash("sha256").update(jsonText).digest("hex"),
  bos_token_id: tokenizer.bos_token_id ?? null,
  eos_token_id: tokenizer.eos_token_id ?? null,
  cases,
};
writeFileSync(outPath, JSON.stringify(fixture) + "\n");
console.error(`${name}: ${cases.length} texts, ${cases.reduce((n, c) => n + c.ids.length, 0)} ids`);
