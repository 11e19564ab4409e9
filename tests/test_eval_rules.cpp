// lm-evaluation-harness's rules, each against a hand-computed case (issue 10 acceptance): pair
// encoding, prefix token, truncation, rolling windows, acc_norm by characters, WinoGrande's shared
// continuation, word/byte counts, the task templates and text preprocessing, the readers' errors,
// and the Mersenne Twister behind the bootstrap stderr.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/tools/eval/eval.h"
#include "gaincell/tools/eval/metrics.h"
#include "gaincell/tools/eval/requests.h"
#include "gaincell/tools/eval/task.h"
#include "gaincell/tools/eval/text_rules.h"
#include "gaincell/tools/eval/token_file.h"
#include "test_tokenizer_util.h"

namespace gaincell::eval {
namespace {

namespace fs = std::filesystem;
using test_util::TempDir;

const fs::path kFixtures = fs::path(GAINCELL_SOURCE_DIR) / "tests" / "fixtures" / "eval";

std::vector<int32_t> concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Expects a gaincell::Error whose message contains every fragment.
template <typename F>
void expect_error(F&& f, const std::vector<std::string>& fragments) {
  try {
    f();
    ADD_FAILURE() << "expected an error mentioning " << fragments.at(0);
  } catch (const Error& e) {
    for (const std::string& s : fragments)
      EXPECT_NE(std::string(e.what()).find(s), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------------------------------------
// Pair encoding (api/model.py _encode_pair, loglikelihood)

TEST(EvalRules, TrailingSpaceOfTheContextMovesToTheContinuation) {
  GAINCELL_REQUIRE_VOCAB();
  const Tokenizer& tok = *test_util::shared_tokenizer();
  // "Answer: " + "yes": the space belongs to " yes" (one token), not to the context.
  const TokenRequest r = encode_request(tok, "Question: is it?\nAnswer: ", "yes");
  EXPECT_EQ(r.context, tok.encode("Question: is it?\nAnswer:"));
  EXPECT_EQ(r.continuation, tok.encode(" yes"));
  EXPECT_EQ(r.continuation.size(), 1u);
  // Several whitespace characters (including a newline) move together.
  const TokenRequest two = encode_request(tok, "a b \n ", "c");
  EXPECT_EQ(two.context, tok.encode("a b"));
  EXPECT_EQ(concat(two.context, two.continuation), tok.encode("a b \n c"));
}

TEST(EvalRules, ContinuationIsWholeMinusContextTokens) {
  GAINCELL_REQUIRE_VOCAB();
  const Tokenizer& tok = *test_util::shared_tokenizer();
  // "The cat" + "s sat": the whole text tokenises as "The| cats| sat", the context as "The| cat",
  // so the continuation is whole[2:] = " sat" (lm-eval's rule), not tok("s sat").
  const TokenRequest r = encode_request(tok, "The cat", "s sat");
  const std::vector<int32_t> whole = tok.encode("The cats sat");
  ASSERT_EQ(whole.size(), 3u);
  EXPECT_EQ(r.context, tok.encode("The cat"));
  EXPECT_EQ(r.continuation, std::vector<int32_t>(whole.begin() + 2, whole.end()));
  EXPECT_EQ(r.continuation, tok.encode(" sat"));
  EXPECT_NE(r.continuation, tok.encode("s sat"));
}

TEST(EvalRules, EmptyContextIsThePrefixToken) {
  GAINCELL_REQUIRE_VOCAB();
  const Tokenizer& tok = *test_util::shared_tokenizer();
  EXPECT_EQ(prefix_token(tok), 50256);  // GPT-2: no BOS, so <|endoftext|>
  EXPECT_EQ(prefix_token(Tokenizer::bytes()), 256);
  const TokenRequest r = encode_request(tok, "", " Hello world");
  EXPECT_EQ(r.context, std::vector<int32_t>{50256});
  EXPECT_EQ(r.continuation, tok.encode(" Hello world"));
  expect_error([&] { encode_request(tok, "   ", "x"); }, {"context"});
}

TEST(EvalRules, LeftTruncationToMaxLengthPlusOne) {
  TokenRequest r;
  r.context = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  r.continuation = {11, 12, 13};
  // max_length 8: (ctx + cont)[-9:][:-1] = [5 .. 12]; the last 3 positions are scored.
  ModelInput in = model_input(r, 8);
  EXPECT_EQ(in.tokens, (std::vector<int32_t>{5, 6, 7, 8, 9, 10, 11, 12}));
  EXPECT_EQ(in.scored, 3);
  // Short enough: no truncation, only the final token dropped.
  in = model_input(r, 100);
  EXPECT_EQ(in.tokens, (std::vector<int32_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}));
  // A continuation longer than the model's context is an error.
  r.continuation.assign(9, 1);
  expect_error([&] { model_input(r, 8); }, {"continuation of 9 tokens", "context of 8"});
}

TEST(EvalRules, DisjointRollingWindows) {
  // utils.get_rolling_token_windows(context_len = 1) + make_disjoint_window, 10 tokens, 4 per
  // window, prefix 99:
  //   [99, 0, 1, 2] -> [0, 1, 2, 3]   context [99]
  //   [3, 4, 5, 6]  -> [4, 5, 6, 7]   context [3]
  //   [5, 6, 7, 8]  -> [8, 9]         context [5, 6, 7] (the last window is left-extended)
  const std::vector<int32_t> tokens = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  const auto w = rolling_requests(tokens, 99, 4);
  ASSERT_EQ(w.size(), 3u);
  EXPECT_EQ(w[0].context, std::vector<int32_t>{99});
  EXPECT_EQ(w[0].continuation, (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(w[1].context, std::vector<int32_t>{3});
  EXPECT_EQ(w[1].continuation, (std::vector<int32_t>{4, 5, 6, 7}));
  EXPECT_EQ(w[2].context, (std::vector<int32_t>{5, 6, 7}));
  EXPECT_EQ(w[2].continuation, (std::vector<int32_t>{8, 9}));
  // Each window's model input is at most max_length tokens and every token is predicted once.
  for (const auto& r : w) EXPECT_LE(model_input(r, 4).tokens.size(), 4u);
  // Fewer tokens than a window: one window from the prefix.
  const auto one = rolling_requests(std::vector<int32_t>{7, 8}, 99, 4);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].context, std::vector<int32_t>{99});
  EXPECT_EQ(one[0].continuation, (std::vector<int32_t>{7, 8}));
  EXPECT_TRUE(rolling_requests(std::vector<int32_t>{}, 99, 4).empty());
}

// ---------------------------------------------------------------------------------------------
// Metrics rules

TEST(EvalRules, AccNormDividesByCharactersNotBytesOrTokens) {
  // "abcdef" has 6 characters; "éééé" has 4 characters but 8 UTF-8 bytes.
  // lls -12, -9: acc picks 1 (-9 > -12); per character -2.0 vs -2.25 picks 0; per byte it would
  // be -2.0 vs -1.125 (choice 1).
  const std::vector<double> lls = {-12.0, -9.0};
  const std::vector<std::string> choices = {"abcdef", "\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9"};
  const Prediction p = predict_choice(lls, choices);
  EXPECT_EQ(p.chosen, 1);
  EXPECT_EQ(p.chosen_norm, 0);
  // Ties go to the first choice (np.argmax).
  EXPECT_EQ(
      predict_choice(std::vector<double>{-1.0, -1.0}, std::vector<std::string>{"a", "b"}).chosen,
      0);
}

TEST(EvalRules, MeanStderrAndPerplexityAggregations) {
  const std::vector<double> acc = {1, 0, 1, 1};
  EXPECT_DOUBLE_EQ(mean(acc), 0.75);
  // sample stddev sqrt(0.75 / 3) = 0.5; / sqrt(4) = 0.25
  EXPECT_DOUBLE_EQ(mean_stderr(acc), 0.25);
  const std::vector<double> lls = {-1.0, -3.0};
  EXPECT_DOUBLE_EQ(perplexity(lls), std::exp(2.0));
  // Weighted: (-10 - 20) / (5 + 10 words) = -2 per word.
  const std::vector<std::pair<double, double>> items = {{-10.0, 5.0}, {-20.0, 10.0}};
  EXPECT_DOUBLE_EQ(weighted_perplexity(items), std::exp(2.0));
  EXPECT_DOUBLE_EQ(bits_per_byte(items), 2.0 / std::log(2.0));
}

TEST(EvalRules, PythonRandomReproducesCPython) {
  // random.Random(0).random(), then getrandbits(32); Random(12345678901) (two key words);
  // [int(Random(7).random() * 10) for _ in range(8)] — values printed by CPython 3.11.
  PythonRandom r0(0);
  EXPECT_EQ(r0.random(), 0.8444218515250481);
  EXPECT_EQ(r0.next_u32(), 3255389356u);
  PythonRandom big(12345678901ull);
  EXPECT_EQ(big.random(), 0.9460118159397316);
  PythonRandom r7(7);
  std::vector<int64_t> draws;
  for (int i = 0; i < 8; i++) draws.push_back(r7.choice_index(10));
  EXPECT_EQ(draws, (std::vector<int64_t>{3, 1, 6, 0, 5, 3, 0, 5}));
}

// ---------------------------------------------------------------------------------------------
// Text rules (task preprocessing)

TEST(EvalRules, WordsAndBytesAreCountedOnTheUndetokenisedPage) {
  // re.split(r"\s+", ...) pieces: '', '=', 'A', '=', 'b', 'c', ''
  EXPECT_EQ(count_words(" = A = \n b  c "), 7);
  EXPECT_EQ(count_words(""), 1);
  // \x1c, \x85 and U+3000 are Python whitespace; U+200B is not.
  EXPECT_EQ(count_words("x\x1cy\xC2\x85z\xE3\x80\x80w\xE2\x80\x8Bq"), 4);
  const auto docs = load_task_docs(task_info("wikitext"), kFixtures / "wikitext_test.jsonl");
  const std::string page = nlohmann::json::parse(
      python_split(read_text_file(kFixtures / "wikitext_test.jsonl"), "\n")[2])["page"];
  ASSERT_EQ(docs.size(), 3u);
  EXPECT_EQ(docs[2].words, count_words(page));
  EXPECT_EQ(docs[2].bytes, static_cast<int64_t>(page.size()));  // UTF-8 bytes: "café", "naïve"
  EXPECT_NE(docs[2].requests[0].continuation, page);            // scored text is detokenised
  EXPECT_NE(docs[2].words, count_words(docs[2].requests[0].continuation));
  EXPECT_EQ(docs[2].requests[0].context, "");
}

TEST(EvalRules, WikitextDetokenizer) {
  EXPECT_EQ(wikitext_detokenizer("The cat 's toy , a 1 @,@ 000 @-@ year @.@ 5 thing ."),
            "The cat's toy, a 1,000-year.5 thing .");
  EXPECT_EQ(wikitext_detokenizer("( a b ) [ c ] { d } \" e \" ' f '"), "(a b) [c] {d} \"e\" 'f'");
  EXPECT_EQ(wikitext_detokenizer("= = Title = =\n = = = Sub = = = \n"),
            "== Title ==\n=== Sub ===\n");
  EXPECT_EQ(wikitext_detokenizer("It was 5 \xC2\xB0 C , N times ."),
            "It was 5\xC2\xB0"
            "C, 1 times .");
  // The regex's replacement is the literal "/'[0-9]/" (as in the harness).
  EXPECT_EQ(wikitext_detokenizer("players ' union /' 5/"), "players'union /'[0-9]/");
  // The lazy group stops at the first closing bracket.
  EXPECT_EQ(wikitext_detokenizer("( unclosed and ( nested ) )"), "(unclosed and ( nested) )");
}

TEST(EvalRules, HellaswagPreprocessAndCapitalize) {
  EXPECT_EQ(hellaswag_preprocess("  Cut the fruit. [title] Wash it [step]  now.  "),
            "Cut the fruit.. Wash it  now.");
  EXPECT_EQ(hellaswag_preprocess("a [b\n c] d  e   f"), "a [b\n c] d e  f");  // "." stops at \n
  EXPECT_EQ(python_capitalize("\xC3\x89LAN SHE said"), "\xC3\x89lan she said");
  EXPECT_EQ(python_capitalize("\xC3\x9F x"), "Ss x");
}

// Expected values from CPython 3.11's str.capitalize() (title case of the first code point, full
// lower case of the rest, final sigma), written out by hand as UTF-8.
TEST(EvalRules, CapitalizeIsUnicodeCorrectForEveryScript) {
  struct Case {
    const char* in;
    const char* out;
  };
  const Case cases[] = {
      {"", ""},
      {"123 ABC", "123 abc"},
      {"'hello", "'hello"},  // the first character, not the first letter
      {"\xFF"
       "ABC \xC3",
       "\xFF"
       "abc \xC3"},  // malformed bytes (surrogateescape) are kept
      {"\xC7\x86"
       "emal",
       "\xC7\x85"
       "emal"},                          // dž -> Dž (title case, not DŽ)
      {"\xC7\xB3Z", "\xC7\xB2z"},        // dz -> Dz
      {"\xEF\xAC\x81x ABC", "Fix abc"},  // the fi ligature -> "Fi"
      {"\xC3\xBF"
       "ES",
       "\xC5\xB8"
       "es"},                                  // ÿ -> Ÿ (outside Latin-1)
      {"\xC7\xB0x", "J\xCC\x8Cx"},             // ǰ -> J + combining caron
      {"\xC5\x89", "\xCA\xBCN"},               // ŉ -> ʼN
      {"\xC4\xB0STANBUL", "\xC4\xB0stanbul"},  // İ stays; the rest lower case
      {"a\xC4\xB0", "Ai\xCC\x87"},             // İ lower case: i + combining dot
      // ΣΑΣ ΟΔΟΣ -> Σας οδος: a word-final capital sigma lowers to ς.
      {"\xCE\xA3\xCE\x91\xCE\xA3 \xCE\x9F\xCE\x94\xCE\x9F\xCE\xA3",
       "\xCE\xA3\xCE\xB1\xCF\x82 \xCE\xBF\xCE\xB4\xCE\xBF\xCF\x82"},
      {"\xD0\xBF\xD0\xA0\xD0\x98", "\xD0\x9F\xD1\x80\xD0\xB8"},  // пРИ -> При (Cyrillic)
  };
  for (const Case& c : cases) EXPECT_EQ(python_capitalize(c.in), c.out) << c.in;
  const auto docs =
      load_task_docs(task_info("hellaswag"), kFixtures / "hellaswag_validation.jsonl");
  ASSERT_EQ(docs.size(), 3u);
  // activity_label + ": " + ctx_a + " " + ctx_b.capitalize(), preprocessed; " " + ending.
  EXPECT_EQ(docs[0].requests[0].context,
            "Washing a dog: A man fills a plastic tub with warm water in the back yard and lifts a "
            "small dog into it. Then he");
  EXPECT_EQ(docs[0].requests[0].continuation,
            " pours soap on the dog and scrubs its fur with a brush.");
  EXPECT_EQ(docs[0].choices[2], "drives the tub to the shop buys bread.");
  EXPECT_EQ(docs[1].requests[0].context,
            "Home and Garden: How to grow tomatoes on a balcony. Choose a sunny spot. Tomatoes "
            "need at least six hours of sun. You can also use a reflective wall");
  EXPECT_EQ(docs[0].gold, 0);  // "0" as a string
  EXPECT_EQ(docs[2].gold, 2);
  const auto orig = load_task_docs(task_info("hellaswag"), kFixtures / "hellaswag_val.jsonl");
  EXPECT_EQ(orig[0].gold, 0);  // integer label of the original release
}

TEST(EvalRules, WinograndeSharesTheContinuation) {
  const auto docs =
      load_task_docs(task_info("winogrande"), kFixtures / "winogrande_validation.jsonl");
  ASSERT_EQ(docs.size(), 4u);
  // One context per option (sentence up to the blank + option), one shared continuation.
  ASSERT_EQ(docs[0].requests.size(), 2u);
  EXPECT_EQ(docs[0].requests[0].context, "Anna lent her umbrella to Beth because Anna");
  EXPECT_EQ(docs[0].requests[1].context, "Anna lent her umbrella to Beth because Beth");
  EXPECT_EQ(docs[0].requests[0].continuation, " was going to walk home in the rain.");
  EXPECT_EQ(docs[0].requests[1].continuation, docs[0].requests[0].continuation);
  EXPECT_EQ(docs[0].gold, 1);  // answer "2"
  EXPECT_EQ(docs[3].gold, 1);  // answer 2 (an integer)
}

TEST(EvalRules, ArcAndPiqaTemplates) {
  const auto hf = load_task_docs(task_info("arc_easy"), kFixtures / "arc_easy_test.jsonl");
  EXPECT_EQ(hf[0].requests[0].context,
            "Question: Which form of energy does a plant use to make food?\nAnswer:");
  EXPECT_EQ(hf[0].requests[0].continuation, " light");
  EXPECT_EQ(hf[1].gold, 1);  // numeric answer key "2" among labels "1", "2", "3"
  EXPECT_EQ(hf[2].requests.size(), 5u);
  const auto orig =
      load_task_docs(task_info("arc_challenge"), kFixtures / "ARC-Challenge-Test.jsonl");
  EXPECT_EQ(orig[1].requests[0].context, "Question: Why do the seasons change on Earth?\nAnswer:");
  EXPECT_EQ(orig[1].gold, 0);
  const auto piqa = load_task_docs(task_info("piqa"), kFixtures / "piqa_validation.jsonl");
  EXPECT_EQ(piqa[1].requests[1].context, "Question: To open a jar with a stuck lid,\nAnswer:");
  EXPECT_EQ(piqa[1].requests[1].continuation,
            " run the lid under hot water for a minute, then twist.");
  EXPECT_EQ(piqa[1].gold, 1);
}

TEST(EvalRules, LambadaSplitsOffTheLastWord) {
  TempDir dir;
  write_file_atomic(dir.path() / "l.jsonl",
                    "{\"text\": \"He opened the  door\"}\n{\"text\": \"one\"}\n");
  const auto docs = load_task_docs(task_info("lambada_openai"), dir.path() / "l.jsonl");
  // text.split(' '): "He", "opened", "the", "", "door" -> context keeps the double space.
  EXPECT_EQ(docs[0].requests[0].context, "He opened the ");
  EXPECT_EQ(docs[0].requests[0].continuation, " door");
  EXPECT_EQ(docs[1].requests[0].context, "");  // the prefix token
  EXPECT_EQ(docs[1].requests[0].continuation, " one");
}

TEST(EvalRules, RawWikitextSplitsLikeTheDocumentLevelDataset) {
  const auto pages = split_wikitext_documents(read_text_file(kFixtures / "wiki.test.raw"));
  std::vector<std::string> rows;
  for (const std::string& line :
       python_split(read_text_file(kFixtures / "wikitext_test.jsonl"), "\n")) {
    if (!line.empty()) rows.push_back(nlohmann::json::parse(line)["page"]);
  }
  // The leading " " line is dropped (whitespace only); "= = History = =" is not a page heading;
  // each page but the last loses the newline that precedes the next heading.
  ASSERT_EQ(pages.size(), 3u);
  EXPECT_EQ(pages[0], rows[0].substr(0, rows[0].size() - 1));
  EXPECT_EQ(pages[1], rows[1].substr(0, rows[1].size() - 1));
  EXPECT_EQ(pages[2], rows[2]);
  EXPECT_EQ(split_wikitext_documents("a\r\n = T = \r\nb").size(), 2u);
}

// ---------------------------------------------------------------------------------------------
// Readers: errors name the file, line and field; nothing is skipped.

TEST(EvalReaders, MalformedRowsAreErrorsNamingFileLineAndField) {
  TempDir dir;
  const fs::path f = dir.path() / "bad.jsonl";
  write_file_atomic(f, "{\"text\": \"fine row\"}\n{\"txt\": \"x\"}\n");
  expect_error([&] { load_task_docs(task_info("lambada_openai"), f); },
               {"bad.jsonl:2", "'text'", "missing"});
  write_file_atomic(f, "{\"text\": \"fine\"}\n{not json\n");
  expect_error([&] { load_task_docs(task_info("lambada_openai"), f); },
               {"bad.jsonl:2", "not valid JSON"});
  write_file_atomic(f, "{\"text\": \"fine\"}\n\n{\"text\": \"x\"}\n");
  expect_error([&] { load_task_docs(task_info("lambada_openai"), f); },
               {"bad.jsonl:2", "empty line"});
  write_file_atomic(
      f,
      "{\"sentence\": \"no blank\", \"option1\": \"a\", \"option2\": \"b\", \"answer\": \"1\"}\n");
  expect_error([&] { load_task_docs(task_info("winogrande"), f); },
               {"bad.jsonl:1", "'sentence'", "_"});
  write_file_atomic(f, "{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\", \"label\": 2}\n");
  expect_error([&] { load_task_docs(task_info("piqa"), f); },
               {"bad.jsonl:1", "'label'", "outside"});
  write_file_atomic(f,
                    "{\"question\": \"q\", \"choices\": {\"text\": [\"a\"], \"label\": [\"A\"]}, "
                    "\"answerKey\": \"B\"}\n");
  expect_error([&] { load_task_docs(task_info("arc_easy"), f); }, {"bad.jsonl:1", "'answerKey'"});
  write_file_atomic(f,
                    "{\"activity_label\": \"a\", \"ctx_a\": \"b\", \"ctx_b\": \"c\", \"endings\": "
                    "[\"x\"], \"label\": \"one\"}\n");
  expect_error([&] { load_task_docs(task_info("hellaswag"), f); }, {"bad.jsonl:1", "'label'"});
  write_file_atomic(f, "{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\"}\n");
  expect_error([&] { load_task_docs(task_info("piqa"), f); }, {"labels"});
  write_file_atomic(f, "");
  expect_error([&] { load_task_docs(task_info("lambada_openai"), f); }, {"no documents"});
  expect_error([&] { load_task_docs(task_info("piqa"), dir.path() / "missing.jsonl"); },
               {"missing.jsonl", "does not exist"});
  expect_error([&] { task_info("mmlu"); }, {"unknown task 'mmlu'", "hellaswag"});
  expect_error([&] { find_task_file(task_info("hellaswag"), dir.path()); },
               {"hellaswag_validation.jsonl"});
}

TEST(EvalReaders, OriginalPiqaReadsTheLabelsFileBesideIt) {
  TempDir dir;
  write_file_atomic(dir.path() / "valid.jsonl",
                    "{\"goal\": \"g1\", \"sol1\": \"a\", \"sol2\": \"b\"}\n{\"goal\": \"g2\", "
                    "\"sol1\": \"c\", \"sol2\": \"d\"}\n");
  write_file_atomic(dir.path() / "valid-labels.lst", "1\n0\n");
  const auto docs = load_task_docs(task_info("piqa"), dir.path() / "valid.jsonl");
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[0].gold, 1);
  EXPECT_EQ(docs[1].gold, 0);
  EXPECT_EQ(load_task_docs(task_info("piqa"), dir.path() / "valid.jsonl", 1).size(), 1u);
  write_file_atomic(dir.path() / "valid-labels.lst", "1\n");
  expect_error([&] { load_task_docs(task_info("piqa"), dir.path() / "valid.jsonl"); },
               {"2 rows", "1 labels"});
}

TEST(EvalReaders, TokenFiles) {
  TempDir dir;
  write_file_atomic(dir.path() / "t.json", "{\"ids\": [5, 6, 7]}");
  EXPECT_EQ(read_token_file(dir.path() / "t.json"), (std::vector<int32_t>{5, 6, 7}));
  const uint8_t u16[] = {1, 0, 0x10, 0x27};  // 1, 10000
  write_file_atomic(dir.path() / "t.bin", u16, sizeof u16);
  EXPECT_EQ(read_token_file(dir.path() / "t.bin"), (std::vector<int32_t>{1, 10000}));
  EXPECT_EQ(read_token_file(dir.path() / "t.bin", TokenFileFormat::kUint32),
            (std::vector<int32_t>{0x27100001}));
  expect_error([&] { read_token_file(dir.path() / "t.bin", TokenFileFormat::kUint16, 5000); },
               {"outside"});
  write_file_atomic(dir.path() / "odd.bin", u16, 3);
  expect_error([&] { read_token_file(dir.path() / "odd.bin"); }, {"3 bytes"});
  write_file_atomic(dir.path() / "bad.json", "{\"ids\": [1, -2]}");
  expect_error([&] { read_token_file(dir.path() / "bad.json"); }, {"ids[1]"});
}

}  // namespace
}  // namespace gaincell::eval
