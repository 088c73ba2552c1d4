from stub_upstream.serving import main

main()
